// Package proxy serves a capsule's state store over HTTP/1.1 on a Unix
// socket (SPEC §4): the socket is bound into that capsule only, the caller's
// service is found once per connection, as it is accepted, from a pidfd of
// the process that connected (SO_PEERPIDFD; before Linux 6.5 a pidfd opened
// at accept on SO_PEERCRED's pid), whose pid the Identify callback maps to a
// service while the pidfd proves the pid still names that process; never
// from the request, and never again from a pid number. Every request spends
// a token of the capsule's bucket. Error bodies name no host pid.
//
// A second handler, AdminHandler, serves the same API plus export to the
// host (tori-run state get|put|ls|export) without rate limit or Identify; it
// must only be served on a socket the capsule cannot reach.
package proxy

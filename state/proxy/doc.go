// Package proxy serves a capsule's state store over HTTP/1.1 on a Unix
// socket (SPEC §4): the socket is bound into that capsule only, the caller's
// service is found from the connection's peer credentials (SO_PEERCRED pid,
// mapped to a service by the Identify callback), never from the request, and
// every request spends a token of the capsule's bucket.
//
// A second handler, AdminHandler, serves the same API plus export to the
// host (tori-run state get|put|ls|export) without rate limit or Identify; it
// must only be served on a socket the capsule cannot reach.
package proxy

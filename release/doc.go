// Package release builds capsules into reproducible, content-addressed
// archives and keeps the installed ones: install, list, resolve, verify and
// garbage-collect releases under <root>/releases/<digest>/.
//
// # The archive
//
// A capsule archive is a tar stream, compressed with gzip (default) or
// zstd, holding in this order:
//
//	capsule.yml          the manifest, byte for byte as given to Build
//	tori/                folder
//	tori/metadata.json   name, version, build SHA, tori-run version, created
//	                     (only with SOURCE_DATE_EPOCH), content digest, and
//	                     the file index (see Metadata)
//	app/                 folder
//	app/...              the app's entries, sorted bytewise by path
//
// The stream is canonical: it is a function of the app's contents alone.
// Every entry has uid and gid 0, no user or group names, mtime 0 (or
// SOURCE_DATE_EPOCH when set), and mode 0755 (folders, and files with any
// execute bit), 0644 (other files) or 0777 (symlinks). Folders are listed
// explicitly, each before what it holds. Only files, folders and symlinks
// whose target is relative and resolves inside the app are allowed. The
// tar format is archive/tar's choice for those headers: USTAR, or PAX for
// long or non-ASCII names. Compression is pgzip at level 6 in 1 MiB blocks
// (output independent of the number of cores) or zstd at its default level
// with a fixed 4 encoders. So the same app, manifest, build SHA, tori-run
// version and SOURCE_DATE_EPOCH give the same bytes, whatever the files'
// mtimes, owners and permission bits beyond the execute bit, the umask, the
// order of a zip's entries, or the folder the app sits in.
//
// Build leaves out backup and editor files (*.bak, *~, *.orig, *.swp, .#*),
// version-control folders (.git, .hg, .svn) and Python caches (__pycache__,
// *.pyc): see DefaultExcludes; BuildOptions.Excludes adds patterns.
//
// # Digests
//
// The release digest, which names <root>/releases/<digest>/ and whose first
// 12 hex digits end the archive's default name, is the SHA-256 of the
// uncompressed tar stream, like an OCI layer's diff_id: it does not depend
// on the compression, and `zcat F | sha256sum` prints it. Install
// recomputes it while unpacking, and also re-encodes every entry it reads
// in canonical form and requires the two hashes to agree, so every
// installed release is canonical and Verify can recompute its digest from
// the installed files.
//
// The content digest in tori/metadata.json is the SHA-256 of the file index
// in its canonical text form: for capsule.yml, app and every app entry in
// order, one line "path TAB type TAB mode TAB size TAB sha256 TAB target
// LF", with empty fields where they do not apply.
//
// # Installed releases
//
// Install checks everything before it trusts anything: paths (no absolute
// path, no "..", no control characters), types (no hard link, device node
// or FIFO), modes (no setuid, setgid or sticky bit), symlinks (resolved
// through the other symlinks; none may leave the app), the Limits (counting
// bytes actually decompressed, so a bomb stops at the limit), every entry
// against the index, and every file against its SHA-256. It unpacks into
// <root>/releases/.staging-XXXX/ through folder descriptors, never following
// a symlink, makes the tree read-only (files 0444 or 0555, folders 0555,
// owned by root when root installs), records tori/installed.json, calls
// syncfs once and renames the folder to <root>/releases/<digest>/ under
// the lock <root>/releases/.lock. A crash leaves a staging folder but never
// a partial release; the next Open, Install or GC removes staging folders
// whose install is dead (a live install holds a lock on its folder).
//
// A release is in use when a regular file under <root>/refs/ (by
// convention <root>/refs/<capsule name>/<anything>, such as current or
// previous) or a file <root>/instances/<id>/release holds its digest: any
// run of exactly 64 lowercase hex digits in the file's first 64 KiB counts,
// with or without a "sha256:" prefix. GC never removes a release in use.
// Writers of refs should create the ref before relying on the release and
// hold <root>/releases/.lock while they do, so that a GC cannot run between
// resolving and referencing.
//
// When not to use this package: to read a manifest (package specs), or to
// unpack arbitrary tarballs; Install accepts only canonical capsules.
package release

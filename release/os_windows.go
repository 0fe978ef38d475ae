package release

// oNoFollow: Windows has no O_NOFOLLOW; the scan found the entry a regular
// file, and os.Root keeps every open inside the app folder.
const oNoFollow = 0

// syncDir: Windows cannot flush a folder handle (FlushFileBuffers needs
// write access to it); NTFS journals the rename itself.
func syncDir(string) error { return nil }

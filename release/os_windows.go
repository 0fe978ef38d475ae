package release

// oNoFollow: Windows has no O_NOFOLLOW; the scan found the entry a regular
// file, and os.Root keeps every open inside the app folder.
const oNoFollow = 0

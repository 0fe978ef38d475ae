//go:build !linux

package runtime

// EmbeddedInit is "": capsules, and so their init, are Linux's alone.
func EmbeddedInit() string { return "" }

//go:build linux && cgo

package trampoline

// #cgo CFLAGS: -Wall -std=gnu99
import "C"

//go:build linux && cgo

package trampoline

// #cgo CFLAGS: -Wall -Werror -std=gnu99
import "C"

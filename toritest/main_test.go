package toritest_test

import (
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "workload" {
		os.Exit(workload(os.Args[2:]))
	}
	if os.Geteuid() != 0 && os.Getenv("TORITEST_ROOTLESS_CHILD") == "" {
		fmt.Println("toritest: skipping every test and example: capsules need root here (make test-root)")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

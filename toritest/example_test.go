package toritest_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/tori-run/tori-run/toritest"
)

// exampleTB stands in for the *testing.T a real test has.
type exampleTB struct{ testing.TB }

func (exampleTB) Helper()                         {}
func (exampleTB) Cleanup(func())                  {} // the example calls Stop itself
func (exampleTB) Fatalf(format string, a ...any)  { panic(fmt.Sprintf(format, a...)) }
func (exampleTB) Errorf(format string, a ...any)  { panic(fmt.Sprintf(format, a...)) }
func (exampleTB) Logf(format string, args ...any) {}
func (exampleTB) Log(args ...any)                 {}
func (exampleTB) Name() string                    { return "Example" }

// Start a capsule from its app folder, with one more variable in its
// environment; run a command in its service; read and write its state.
func ExampleStart() {
	var t testing.TB = exampleTB{} // in a test: func TestHello(t *testing.T)

	c := toritest.Start(t, "testdata/hello", toritest.WithEnv("GREETING", "hi"))
	defer c.Stop() // t.Cleanup does it too

	out, _ := c.Exec("hello", "sh", "-c", `echo "$GREETING from $TORI_SERVICE in $TORI_CAPSULE"`)
	fmt.Print(string(out))

	logs, _ := c.Logs("hello")
	fmt.Print(string(logs))

	ctx := context.Background()
	_ = c.State().Put(ctx, "greeting", []byte("hi"))
	v, _ := c.State().Get(ctx, "greeting")
	fmt.Println("state:", string(v))

	// Output:
	// hi from hello in hello
	// hello from hello
	// state: hi
}

// Each capsule has its own PID namespace: inside it, tori-run's init is
// PID 1, and the only other processes are the service and what Exec runs.
// Pid is the service's pid on the host.
func ExampleCapsule_Pid() {
	var t testing.TB = exampleTB{}
	c := toritest.Start(t, "testdata/hello")
	defer c.Stop()
	pid, _ := c.Pid("hello")
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	fmt.Println("host pid found:", err == nil)
	out, _ := c.Exec("hello", "sh", "-c", "cd /proc && echo [0-9]*")
	fmt.Println("processes in the capsule:", len(strings.Fields(string(out))))
	// Output:
	// host pid found: true
	// processes in the capsule: 3
}

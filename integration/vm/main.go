package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() { os.Exit(run()) }

type options struct {
	pkgs      string
	run       string
	skip      string
	timeout   time.Duration
	mem       int
	smp       int
	cache     string
	kernelPkg string
	ldflags   string
	tags      string
	gzip      bool
	kernelLog bool
	keep      bool
}

func run() int {
	var o options
	flag.StringVar(&o.pkgs, "pkgs", "./cgroups/,./overlay/,./runtime/,./integration/vm/", "comma-separated package patterns whose tests run in the guest")
	flag.StringVar(&o.run, "run", "", "passed to each test binary as -test.run")
	flag.StringVar(&o.skip, "skip", "", "passed to each test binary as -test.skip")
	flag.DurationVar(&o.timeout, "timeout", 20*time.Minute, "the guest must finish within this (from boot); QEMU is killed after it")
	flag.IntVar(&o.mem, "mem", 2048, "guest memory, MiB")
	flag.IntVar(&o.smp, "smp", 2, "guest CPUs")
	flag.StringVar(&o.cache, "cache", defaultCacheDir(), "where the kernel is kept between runs (env TORI_VM_CACHE)")
	flag.StringVar(&o.kernelPkg, "kernel-pkg", "", "Debian kernel package (default: what linux-image-amd64 depends on)")
	flag.StringVar(&o.ldflags, "ldflags", "", "extra -ldflags for the guest's tori-run (e.g. version stamps)")
	flag.StringVar(&o.tags, "tags", "seccomp", "build tags added to netgo,osusergo for the guest's binaries (make test-vm passes GOTAGS)")
	flag.BoolVar(&o.gzip, "gzip", false, "gzip the initramfs (smaller file, slower boot under TCG)")
	flag.BoolVar(&o.kernelLog, "kernel-log", false, "keep kernel messages (e.g. OOM reports) on the console")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (binaries, initramfs) for debugging")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "tori-vm: unexpected arguments %q\n", flag.Args())
		return 2
	}
	// SIGHUP and SIGPIPE (stdout closed, e.g. piped into head) too: kill QEMU and clean up, not die.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	defer stop()
	ok, err := runVM(ctx, &o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tori-vm: %v\n", err)
		return 1
	}
	if !ok {
		fmt.Println("FAIL (guest)")
		return 1
	}
	fmt.Println("PASS (guest)")
	return 0
}

func logf(format string, args ...any) { fmt.Printf("tori-vm: "+format+"\n", args...) }

func runVM(ctx context.Context, o *options) (bool, error) {
	t0 := time.Now()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return false, errors.New("no qemu-system-x86_64 on PATH: apt-get install qemu-system-x86")
	}
	busybox, applets, err := findBusybox()
	if err != nil {
		return false, err
	}
	k, err := getKernel(o.cache, o.kernelPkg, logf)
	if err != nil {
		return false, fmt.Errorf("kernel: %w", err)
	}
	logf("kernel %s (%d module(s): %s) from %s", k.Package, len(k.Modules), moduleList(k), filepath.Dir(k.Vmlinuz))
	tKernel := time.Now()

	var patterns []string
	for p := range strings.FieldsFuncSeq(o.pkgs, func(r rune) bool { return r == ',' || r == ' ' }) {
		patterns = append(patterns, p)
	}
	if len(patterns) == 0 {
		return false, errors.New("-pkgs names no packages")
	}
	module, pkgs, noTests, err := listPackages(patterns)
	if err != nil {
		return false, err
	}
	if len(pkgs) == 0 {
		return false, fmt.Errorf("no package of %s has tests", o.pkgs)
	}
	work, err := os.MkdirTemp("", "tori-vm-")
	if err != nil {
		return false, err
	}
	if o.keep {
		logf("keeping work directory %s", work)
	} else {
		defer os.RemoveAll(work)
	}
	toriRun := filepath.Join(work, "tori-run")
	logf("building static tori-run and %d test binaries", len(pkgs))
	if err := buildToriRun(toriRun, module, o.ldflags, o.tags); err != nil {
		return false, err
	}
	if err := buildTests(pkgs, work, o.tags); err != nil {
		return false, err
	}
	toriInit := filepath.Join(work, "tori-init")
	if err := buildToriInit(toriInit, module); err != nil {
		return false, err
	}
	tBuild := time.Now()

	nonce := make([]byte, 6)
	if _, err := rand.Read(nonce); err != nil {
		return false, err
	}
	plan := &guestPlan{
		Marker:      "@@tori-vm:" + hex.EncodeToString(nonce) + "@@",
		Pkgs:        pkgs,
		Run:         o.run,
		Skip:        o.skip,
		ToriInit:    toriInit,
		TestTimeout: o.timeout * 9 / 10, // a hung test dumps its goroutines before QEMU is killed
		KernelLog:   o.kernelLog,
	}
	initrd := filepath.Join(work, "initramfs.cpio")
	if o.gzip {
		initrd += ".gz"
	}
	if err := buildInitramfs(initrd, plan, busybox, applets, toriRun, k, o.gzip); err != nil {
		return false, err
	}
	st, err := os.Stat(initrd)
	if err != nil {
		return false, err
	}
	tInitrd := time.Now()
	logf("initramfs %s: %.1f MiB; kernel %s, build %s, initramfs %s",
		filepath.Base(initrd), float64(st.Size())/(1<<20), tKernel.Sub(t0).Round(time.Millisecond),
		tBuild.Sub(tKernel).Round(time.Millisecond), tInitrd.Sub(tBuild).Round(time.Millisecond))

	con := newConsole(plan.Marker, pkgs, os.Stdout)
	why := bootGuest(ctx, qemu, k, initrd, o, con)
	tEnd := time.Now()
	fmt.Println()
	ok := con.summary(os.Stdout, noTests, why)
	if why != "" {
		fmt.Printf("tori-vm: %s\n", why)
	}
	logf("times: kernel %s, build %s, initramfs %s, guest %s, total %s",
		tKernel.Sub(t0).Round(time.Millisecond), tBuild.Sub(tKernel).Round(time.Millisecond),
		tInitrd.Sub(tBuild).Round(time.Millisecond), tEnd.Sub(tInitrd).Round(time.Millisecond),
		tEnd.Sub(t0).Round(time.Millisecond))
	return ok, nil
}

func moduleList(k *kernel) string {
	var names []string
	for _, m := range k.Modules {
		names = append(names, filepath.Base(m))
	}
	return strings.Join(names, " ")
}

// bootGuest runs QEMU until the guest powers off, feeding its serial console to con. It returns why the
// run was cut short ("" when the guest finished): a timeout, a signal, QEMU failing. QEMU never outlives
// it: it is killed on timeout or signal, and by the kernel (Pdeathsig) should this process die.
func bootGuest(ctx context.Context, qemu string, k *kernel, initrd string, o *options, con *console) string {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	args := []string{
		"-accel", "tcg", // KVM hangs at boot on these machines
		"-cpu", "max",
		"-m", fmt.Sprint(o.mem),
		"-smp", fmt.Sprint(o.smp),
		"-nodefaults", "-no-user-config", "-display", "none",
		"-serial", "stdio",
		"-no-reboot",
		"-kernel", k.Vmlinuz,
		"-initrd", initrd,
		"-append", "console=ttyS0 quiet panic=-1 mitigations=off",
	}
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.Stdin = nil
	cmd.Stderr = prefixWriter("qemu: ", os.Stderr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err.Error()
	}
	logf("booting: %s %s", qemu, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		return "starting QEMU: " + err.Error()
	}
	var afterDone *time.Timer
	r := bufio.NewReaderSize(stdout, 64<<10)
	for {
		s, err := r.ReadString('\n')
		if s != "" {
			con.line(strings.TrimSuffix(s, "\n"))
			if con.done && afterDone == nil {
				afterDone = time.AfterFunc(30*time.Second, cancel) // poweroff -f should end QEMU at once
			}
		}
		if err != nil {
			break
		}
	}
	werr := cmd.Wait()
	switch {
	case con.done && con.fatal == "":
		return ""
	case con.fatal != "":
		return "/init failed: " + con.fatal
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Sprintf("the guest did not finish within %s (QEMU killed)", o.timeout)
	case ctx.Err() != nil:
		return "interrupted (QEMU killed)"
	case werr != nil:
		return "QEMU failed: " + werr.Error()
	case !con.booted:
		return "the guest stopped before /init ran (kernel panic?)"
	}
	return "the guest stopped before all tests ran (a test crashed the guest?)"
}

type lineWriter struct {
	prefix string
	w      io.Writer
	buf    []byte
}

// prefixWriter prefixes each line written to it.
func prefixWriter(prefix string, w io.Writer) io.Writer { return &lineWriter{prefix: prefix, w: w} }

func (l *lineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := strings.IndexByte(string(l.buf), '\n')
		if i < 0 {
			break
		}
		fmt.Fprintf(l.w, "%s%s\n", l.prefix, l.buf[:i])
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

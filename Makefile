# tori-run — see README.md. `make demo` and `make test` are the two commands
# a newcomer needs; the tiers below `test` are for development.

GO        ?= go
PREFIX    ?= /usr/local
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)
BUILD_SHA ?= $(shell git rev-parse HEAD 2>/dev/null)
PKG       := github.com/tori-run/tori-run
LDFLAGS   := -X $(PKG)/runtime.version=$(VERSION) -X $(PKG)/runtime.buildSHA=$(BUILD_SHA)
BIN       := bin/tori-run
GOLANGCI  := bin/golangci-lint
FUZZTIME  ?= 10s
DEMO_ROOT ?= $(CURDIR)/.demo

# Build tags every build, test, vet and lint uses: libcontainer applies the
# capsules' seccomp filter only when built with libseccomp (libseccomp-dev).
# Without the tag tori-run refuses to start a capsule that asks for a filter.
GOTAGS    ?= seccomp
TAGFLAG   := -tags $(GOTAGS)

.PHONY: all build install demo test test-unit test-root test-vm fuzz lint cross doc-test clean bench-toritest bench-toritest-short bench-upgrade-short bench-state bench-state-short bench bench-short

all: build

# Static, with cgo (libcontainer's nsenter is C): the binary is bound into
# every capsule as its init, so it must run whatever the capsule's layers hold.
# The tag toriinit embeds the small capsule init (cmd/tori-init, pure Go,
# static, stripped), built first into runtime/initbin with its SHA-256: every
# capsule's PID 1 is then that 2.6 MB binary, not this one (runtime/initbin,
# docs/PERFORMANCE.md). One recipe line, so that whoever copies the go build
# line of `make -n build` (integration/cluster) gets the init built too.
STATIC    := CGO_ENABLED=1 $(GO) build -trimpath -tags netgo,osusergo,toriinit,$(GOTAGS) -ldflags '$(LDFLAGS) -linkmode external -extldflags -static'
INIT_BIN  := runtime/initbin/tori-init
BUILD_INIT := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(INIT_BIN) ./cmd/tori-init && sha256sum $(INIT_BIN) | cut -d' ' -f1 > $(INIT_BIN).sha256

build: ## build bin/tori-run (static, with the capsule init embedded) and its capsbuild/capsdeploy aliases
	$(BUILD_INIT) && $(STATIC) -o $(BIN) ./cmd/tori-run
	ln -sf tori-run bin/capsbuild
	ln -sf tori-run bin/capsdeploy

install: build ## install into $(PREFIX)/bin
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/tori-run
	ln -sf tori-run $(DESTDIR)$(PREFIX)/bin/capsbuild
	ln -sf tori-run $(DESTDIR)$(PREFIX)/bin/capsdeploy

demo: build ## show what tori-run does today with the reference capsule
	./scripts/demo.sh

test: lint cross doc-test test-root test-vm fuzz bench-short ## everything CI runs

test-unit: ## fast tests, no root needed (root tests skip and say why)
	$(GO) test $(TAGFLAG) -short -count=1 ./...

test-root: ## every test, including those that mount, make cgroups or need root
	@if [ "$$(id -u)" != 0 ]; then echo "make test-root needs root (mounts, cgroups); run make test-unit as a user" >&2; exit 1; fi
	$(GO) test $(TAGFLAG) -count=1 ./...

VM_PKGS    ?= ./cgroups/,./overlay/,./runtime/,./runtime/cgprobe/,./runtime/hostfacts/,./runtime/rootless/,./runtime/incontainer/,./runtime/hostcheck/,./runtime/daemon/,./integration/,./integration/vm/,./toritest/
VM_RUN     ?=
# TestUpgradeDaemonKilled (≈60 s under TCG) is cgroup-mode independent and runs on the host; the guest runs the
# other upgrade tests (sockets, switch under load, roll-backs). It passed there too: make test-vm VM_RUN=TestUpgradeDaemonKilled VM_SKIP=
# TestApplyPython, TestValidateWindowsZip and TestDaemonMetrics read files of other packages (specs/testdata,
# examples/), which the guest's initramfs does not carry; nothing in them depends on the cgroup mode.
VM_SKIP    ?= TestUpgradeDaemonKilled|TestApplyPython|TestValidateWindowsZip|TestDaemonMetrics
VM_TIMEOUT ?= 20m
test-vm: ## run VM_PKGS' tests as root in a cgroup-v2-only QEMU guest (see integration/vm/README.md)
	$(GO) run $(TAGFLAG) ./integration/vm -pkgs '$(VM_PKGS)' -run '$(VM_RUN)' -skip '$(VM_SKIP)' -timeout $(VM_TIMEOUT) -tags '$(GOTAGS)' -ldflags '$(LDFLAGS)'

bench-upgrade-short: ## 3 blue-green switches under client load: fails on any failed request (root)
	$(GO) run $(TAGFLAG) ./bench/upgrade -short

fuzz: ## run each fuzz target briefly (FUZZTIME=10s): no panic, no hang
	$(GO) test $(TAGFLAG) -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./specs/
	$(GO) test $(TAGFLAG) -run '^$$' -fuzz '^FuzzParseSlice$$' -fuzztime $(FUZZTIME) ./specs/

bench-toritest-short: ## toritest's spawn-to-ready benchmark, 3 rounds: it runs and cleans up (numbers: bench-toritest)
	$(GO) test $(TAGFLAG) -run '^$$' -bench '^BenchmarkStart$$' -benchtime 3x ./toritest/

bench-toritest: ## toritest's spawn-to-ready, 200 rounds: p50/p90 as in docs/TORITEST.md
	$(GO) test $(TAGFLAG) -run '^$$' -bench '^BenchmarkStart$$' -benchtime 200x -count 1 ./toritest/

bench-state: ## the state store against SQLite, full counts (about 5 minutes; docs/STATE.md)
	bench/state/bench.sh

bench-state-short: ## the same in a few seconds (-short: 3000 records, 3 s of rate limiter); a smoke check, not numbers
	$(GO) run ./bench/state -short

# Benchmarks (as root). bench-short runs every bench in a few rounds, so
# that a bench that breaks fails make test; its numbers are not for
# comparing. make bench runs them for real and refreshes docs/PERFORMANCE.md.
bench-short: build ## every benchmark in short mode (seconds each): part of make test
	SHORT=1 TORI_BIN=$(CURDIR)/$(BIN) bench/start/bench.sh
	SHORT=1 TORI_BIN=$(CURDIR)/$(BIN) bench/supervise/bench.sh
	SHORT=1 bench/release/bench.sh
	$(MAKE) --no-print-directory bench-state-short bench-toritest-short bench-upgrade-short

bench: build ## every benchmark for real (minutes; as root), then refresh docs/PERFORMANCE.md's tables
	TORI_BIN=$(CURDIR)/$(BIN) bench/start/bench.sh
	TORI_BIN=$(CURDIR)/$(BIN) bench/supervise/bench.sh
	mkdir -p bench/release/results && bench/release/bench.sh | tee bench/release/results/summary.md
	$(MAKE) --no-print-directory bench-state bench-toritest
	python3 bench/tables.py docs/PERFORMANCE.md

cross: ## build for Windows and macOS; under wine64, check the Windows build makes Linux's archive byte for byte
	GO=$(GO) ./scripts/cross.sh

doc-test: ## run every runnable shell block of README.md and docs/*.md (see scripts/doctest.sh)
	GO=$(GO) GOTAGS=$(GOTAGS) ./scripts/doctest.sh

lint: $(GOLANGCI) ## go vet, staticcheck, depguard's layering rules, gofmt
	$(GO) vet $(TAGFLAG) ./...
	$(GOLANGCI) run --build-tags $(GOTAGS) ./...

$(GOLANGCI):
	GOBIN=$(CURDIR)/bin $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0

clean:
	rm -rf bin dist .demo $(INIT_BIN) $(INIT_BIN).sha256

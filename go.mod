module github.com/tori-run/tori-run

go 1.26.8

require (
	github.com/Masterminds/semver/v3 v3.5.0
	github.com/mattn/go-shellwords v1.0.16
	github.com/moby/sys/mountinfo v0.7.3
	github.com/rs/zerolog v1.35.1
	github.com/spf13/cobra v1.10.2
	go.yaml.in/yaml/v3 v3.0.6
	golang.org/x/sys v0.50.0
	golang.org/x/term v0.48.0
)

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
)

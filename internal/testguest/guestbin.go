package testguest

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vmi-exporter/vmi-exporter/internal/procerr"
)

// writevSource is the guest's vectored writer (guestbin/vmi-writev), built
// for the guest from this embedded copy so that Prepare needs no checkout
// of the repository, only the Go toolchain.
//
//go:embed guestbin/vmi-writev/main.go
var writevSource []byte

// writevGoMod makes the copy a module of its own: no dependencies, so the
// build needs no module download.
const writevGoMod = "module vmi-writev\n\ngo 1.21\n"

// writevBin is where the writer (guestbin/vmi-writev) sits in the guest.
const writevBin = "bin/vmi-writev"

// writevBuild are the build's arguments after "go build" (before -o).
var writevBuild = []string{"-trimpath", "-ldflags=-s -w"}

// writevEnv is the build's environment on top of the caller's: a static
// linux/amd64 binary, and nothing fetched (no toolchain switch, no proxy).
var writevEnv = []string{"GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0", "GO111MODULE=on",
	"GOFLAGS=", "GOWORK=off", "GOTOOLCHAIN=local", "GOPROXY=off"}

// writevKey identifies a build of the writer: its source, module file,
// build flags and environment, and the Go version of this program (the
// toolchain in PATH is normally the same one).
func writevKey() string {
	h := sha256.New()
	fmt.Fprintf(h, "go %s\nbuild %q\nenv %q\nmod %d\n%s", runtime.Version(), writevBuild, writevEnv, len(writevGoMod), writevGoMod)
	fmt.Fprintf(h, "source %d\n", len(writevSource))
	h.Write(writevSource)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// buildWritev returns the guest's vectored writer, building it into
// dir/guestbin/<key>/vmi-writev unless it is there already.
func buildWritev(ctx context.Context, dir string, log *slog.Logger) ([]byte, error) {
	final := filepath.Join(dir, "guestbin", writevKey())
	bin := filepath.Join(final, "vmi-writev")
	if b, err := os.ReadFile(bin); err == nil {
		return b, nil
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("testguest: the Go toolchain (go in PATH) builds the guest's vmi-writev: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(final), ".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), writevSource, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte(writevGoMod), 0o644); err != nil {
		return nil, err
	}
	out := filepath.Join(tmp, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		return nil, err
	}
	args := append(append([]string{"build"}, writevBuild...), "-o", filepath.Join(out, "vmi-writev"), ".")
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), writevEnv...)
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("testguest: build vmi-writev: %w", procerr.Error("go "+strings.Join(args, " "), cmd.ProcessState, err, stderr.String()))
	}
	b, err := os.ReadFile(filepath.Join(out, "vmi-writev"))
	if err != nil {
		return nil, fmt.Errorf("testguest: build vmi-writev: %w", err)
	}
	if err := os.Rename(out, final); err != nil && !os.IsExist(err) {
		return nil, fmt.Errorf("testguest: %w", err)
	}
	log.Info("built vmi-writev for the guest", "path", bin, "bytes", len(b))
	return b, nil
}

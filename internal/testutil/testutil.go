// Package testutil holds the small helpers that tests of several packages
// share: a free local port, a log buffer that a process and the test use
// at the same time, the rule for tests that need an installed tool, and
// the build of the exporter binary that end-to-end tests run.
package testutil

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// FreeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago, for a server the test starts.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// SyncBuffer is a bytes.Buffer safe for one writer goroutine (a process's
// output, a logger) and a reader (the test).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// RequireTool skips the test when the program bin is not installed, except
// under CI (CI set), where the live tests must run and a missing tool
// fails the test.
func RequireTool(tb testing.TB, bin string) {
	tb.Helper()
	if _, err := exec.LookPath(bin); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s not installed, and CI must run the live tests: %v", bin, err)
		}
		tb.Skipf("%s not installed: %v", bin, err)
	}
}

// BuildExporter builds cmd/vmi-exporter (and cmd/testguest beside it, which
// the demo runs) into a temporary directory of the
// test and returns its path: end-to-end tests run the binary a user runs.
// The go command of the toolchain running the test is preferred to the
// one on PATH.
func BuildExporter(ctx context.Context, tb testing.TB) string {
	tb.Helper()
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	// testguest next to it: the demo runs the test guest through that
	// command, found beside its own binary.
	dir := tb.TempDir()
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", dir+string(filepath.Separator),
		"github.com/vmi-exporter/vmi-exporter/cmd/vmi-exporter", "github.com/vmi-exporter/vmi-exporter/cmd/testguest")
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build vmi-exporter and testguest: %v\n%s", err, b)
	}
	return filepath.Join(dir, "vmi-exporter")
}

package testguest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/internal/testutil"
)

// repoRoot finds the repository from this source file, so that tests in
// any package can run the project's scripts.
func repoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("testguest: cannot locate the source tree")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..")), nil
}

// BuildPlugin builds the vmi-hooks QEMU plugin with
// scripts/build-qemu-plugin.sh (gcc against the installed QEMU's
// qemu-plugin.h from Debian's source package) and returns the .so path.
// The script caches the build, so repeated calls are cheap.
func BuildPlugin(ctx context.Context) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "build-qemu-plugin.sh"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("testguest: build the QEMU plugin: %w\n%s", err, errb.String())
	}
	so := strings.TrimSpace(out.String())
	if _, err := os.Stat(so); err != nil {
		return "", fmt.Errorf("testguest: build the QEMU plugin: %w", err)
	}
	return so, nil
}

// RequirePlugin builds the plugin for a test, skipping it when the tools
// are missing locally and failing it under CI, like testutil.RequireTool.
func RequirePlugin(tb testing.TB) string {
	tb.Helper()
	testutil.RequireTool(tb, "gcc")
	testutil.RequireTool(tb, "pkg-config")
	so, err := BuildPlugin(context.Background())
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("CI must run the plugin tests: %v", err)
		}
		tb.Skip(err)
	}
	return so
}

// PluginArgs returns the QEMU arguments that load the plugin so with its
// shared file at shm and the given extra plugin options (key=value).
func PluginArgs(so, shm string, opts ...string) []string {
	return []string{"-plugin", strings.Join(append([]string{so, "shm=" + shm}, opts...), ",")}
}

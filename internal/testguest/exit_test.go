package testguest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A QEMU that exits before its sockets appear is reported with its exit
// status and the end of its stderr, even when it exits 0 silently
// (before: "testguest: qemu exited: " and nothing after the colon).
func TestQEMUExitReported(t *testing.T) {
	for name, tc := range map[string]struct{ script, want1, want2 string }{
		"failure": {"echo 'qemu-system-x86_64: -object memory-backend-file: permission denied' >&2\nexit 1",
			"exit status 1", "permission denied"},
		"silent": {"exit 0", "exit status 0", "stderr empty"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			qemu := filepath.Join(dir, "qemu")
			if err := os.WriteFile(qemu, []byte("#!/bin/sh\n"+tc.script+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			_, err := Boot(context.Background(), &Assets{Kernel: "/nonexistent/vmlinuz", Initrd: "/nonexistent/initrd"},
				Options{QEMU: qemu, Dir: filepath.Join(dir, "guest")})
			if err == nil {
				t.Fatal("Boot succeeded")
			}
			if msg := err.Error(); !strings.Contains(msg, tc.want1) || !strings.Contains(msg, tc.want2) {
				t.Errorf("error %q lacks %q or %q", msg, tc.want1, tc.want2)
			}
		})
	}
}

package attach

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/collector"
)

// A guest whose RAM file is not on this host is valid configuration; its
// attach fails at once with the key and a not-exist error, which the
// collector reports as down with reason not_found.
func TestAbsentRAMFileFailsAtAttach(t *testing.T) {
	dir := t.TempDir()
	g := collector.GuestConfig{Name: "elsewhere", Driver: "qemu", QEMU: collector.QEMUConfig{
		GDBSocket: filepath.Join(dir, "g.gdb"), QMPSocket: filepath.Join(dir, "g.qmp"), RAMPath: filepath.Join(dir, "g.ram"),
	}}
	if errs := ValidateGuest(g); len(errs) != 0 {
		t.Fatalf("validation stats host files: %v", errs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := (&QEMU{Timeout: time.Second}).Attach(ctx, g)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "qemu.ram_path") {
		t.Fatalf("attach: %v", err)
	}
	if r := collector.AttachFailureReason(err); r != collector.DownNotFound {
		t.Errorf("reason %s of %v, want not_found", r, err)
	}
}

package vmlinux

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/internal/testguest"
)

var (
	debianOnce   sync.Once
	debianAssets *testguest.Assets
	debianErr    error
)

// debianKernel returns Debian's cloud kernel package (linux-image-cloud-amd64's
// dependency: LZ4-compressed, with BTF), fetched with apt by the test guest's
// cached preparation ($XDG_CACHE_HOME/vmi-exporter/testguest) and shared
// with the end-to-end tests.
func debianKernel(tb testing.TB) *testguest.Assets {
	tb.Helper()
	debianOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		debianAssets, debianErr = testguest.Prepare(ctx, "", slog.New(slog.DiscardHandler))
	})
	if debianErr != nil {
		tb.Fatalf("fetch Debian kernel (needs apt and Debian's mirror; or set VMI_EXPORTER_VMLINUZ): %v", debianErr)
	}
	return debianAssets
}

// debianVmlinuz returns the path of Debian's cloud kernel image;
// $VMI_EXPORTER_VMLINUZ names an image to use instead.
func debianVmlinuz(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("VMI_EXPORTER_VMLINUZ"); p != "" {
		return p
	}
	return debianKernel(tb).Kernel
}

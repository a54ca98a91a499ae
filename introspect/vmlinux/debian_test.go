package vmlinux

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// debianKernelMeta is the Debian metapackage whose dependency names the
// current cloud kernel; its image is LZ4-compressed and carries BTF.
const debianKernelMeta = "linux-image-cloud-amd64"

var (
	debianOnce sync.Once
	debianPath string
	debianErr  error
)

// debianVmlinuz returns the path of Debian's cloud kernel image, fetched
// with apt into $XDG_CACHE_HOME/vmi-exporter/debian-kernel on first use and
// reused afterwards. $VMI_EXPORTER_VMLINUZ names an image to use instead.
func debianVmlinuz(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("VMI_EXPORTER_VMLINUZ"); p != "" {
		return p
	}
	debianOnce.Do(func() { debianPath, debianErr = fetchDebianKernel() })
	if debianErr != nil {
		tb.Fatalf("fetch Debian kernel (needs apt and Debian's mirror; or set VMI_EXPORTER_VMLINUZ): %v", debianErr)
	}
	return debianPath
}

var dependsRE = regexp.MustCompile(`Depends:\s+(linux-image-[0-9][^\s]*-cloud-amd64)`)

func fetchDebianKernel() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", debianKernelMeta).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends %s: %w", debianKernelMeta, err)
	}
	m := dependsRE.FindSubmatch(out)
	if m == nil {
		return "", &os.PathError{Op: "apt-cache depends", Path: debianKernelMeta, Err: os.ErrNotExist}
	}
	pkg := string(m[1])
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "vmi-exporter", "debian-kernel", pkg)
	release := strings.TrimPrefix(pkg, "linux-image-")
	image := filepath.Join(dir, "root", "boot", "vmlinuz-"+release)
	if _, err := os.Stat(image); err == nil {
		return image, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	dl := exec.CommandContext(ctx, "apt-get", "download", pkg)
	dl.Dir = dir
	if out, err := dl.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download %s: %w: %s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if len(debs) == 0 {
		return "", &os.PathError{Op: "apt-get download", Path: pkg, Err: os.ErrNotExist}
	}
	tmp, err := os.MkdirTemp(dir, ".root-")
	if err != nil {
		return "", err
	}
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], tmp).CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("dpkg-deb -x: %w: %s", err, out)
	}
	// Keep only what tests read.
	os.RemoveAll(filepath.Join(tmp, "lib"))
	os.RemoveAll(filepath.Join(tmp, "usr"))
	if err := os.Rename(tmp, filepath.Join(dir, "root")); err != nil {
		return "", err
	}
	return image, nil
}

// debianRelease returns the package version of the fetched kernel, from
// the .deb name, for test logs.
func debianRelease(image string) string {
	debs, _ := filepath.Glob(filepath.Join(filepath.Dir(filepath.Dir(filepath.Dir(image))), "*.deb"))
	if len(debs) == 0 {
		return filepath.Base(image)
	}
	return filepath.Base(debs[0])
}

package vmlinux

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// backportsKernel fetches the cloud kernel of bookworm-backports (6.12:
// zstd-compressed, the 6.4+ kallsyms layout, current_task inside pcpu_hot)
// with apt into $XDG_CACHE_HOME/vmi-exporter/kernels. It shows that the
// image reader is not tied to the one kernel the test guest boots.
// scripts/install-deps.sh configures bookworm-backports, as CI runs it.
func backportsKernel(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const meta = "linux-image-cloud-amd64/bookworm-backports"
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", meta).CombinedOutput()
	if err != nil {
		t.Fatalf("apt-cache depends %s (is bookworm-backports configured? scripts/install-deps.sh does it): %v: %s", meta, err, out)
	}
	m := regexp.MustCompile(`Depends:\s+(linux-image-[0-9][^\s]*-cloud-amd64)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("apt-cache depends %s names no kernel: %s", meta, out)
	}
	pkg := string(m[1])
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(cache, "vmi-exporter", "kernels", pkg)
	image := filepath.Join(dir, "vmlinuz-"+strings.TrimPrefix(pkg, "linux-image-"))
	if _, err := os.Stat(image); err == nil {
		return image
	}
	if err := fetchKernelImage(ctx, pkg, dir, image); err != nil {
		t.Fatal(err)
	}
	return image
}

func fetchKernelImage(ctx context.Context, pkg, dir, image string) error {
	tmp, err := os.MkdirTemp("", "vmi-kernel-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dl := exec.CommandContext(ctx, "apt-get", "download", pkg)
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s: %w: %s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s: %d .deb files", pkg, len(debs))
	}
	root := filepath.Join(tmp, "root")
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], root).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg-deb -x %s: %w: %s", debs[0], err, out)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(root, "boot", filepath.Base(image)))
	if err != nil {
		return err
	}
	part := image + ".part"
	if err := os.WriteFile(part, b, 0o644); err != nil {
		return err
	}
	return os.Rename(part, image)
}

func TestBackportsKernel(t *testing.T) {
	path := backportsKernel(t)
	im, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	k := im.Kallsyms
	t.Logf("%s: %s, %v, %d symbols", filepath.Base(path), im.Banner, im.Compression, len(k.Symbols))
	if im.Compression != CompressionZstd {
		t.Errorf("compression %v, want zstd", im.Compression)
	}
	release := strings.TrimPrefix(filepath.Base(path), "vmlinuz-")
	if !strings.HasPrefix(im.Banner, "Linux version "+release+" ") {
		t.Errorf("banner %q does not name release %s", im.Banner, release)
	}
	// From 6.4 the addresses follow the token index.
	if k.Offsets < k.TokenTable || k.Names > k.TokenTable {
		t.Errorf("tables at names %#x, tokens %#x, offsets %#x: not the 6.4+ layout", k.Names, k.TokenTable, k.Offsets)
	}
	if len(k.Symbols) < 50000 {
		t.Errorf("%d symbols", len(k.Symbols))
	}
	checkKsymtab(t, im)
	p, err := BuildProfile(im)
	if err != nil {
		t.Fatal(err)
	}
	checkLinuxProfile(t, p)
}

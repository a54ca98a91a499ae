package testguest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vmi-exporter/vmi-exporter/internal/procerr"
)

// DefaultKernelMetapackage is the Debian metapackage whose dependency names
// the concrete cloud kernel package.
const DefaultKernelMetapackage = "linux-image-cloud-amd64"

// busyboxPackage provides the statically linked busybox put in the initramfs.
const busyboxPackage = "busybox-static"

// Assets are the files needed to boot the test guest, all inside the cache.
type Assets struct {
	// Kernel is the bzImage (vmlinuz) from the kernel package.
	Kernel string `json:"kernel"`
	// Initrd is the gzip-compressed newc initramfs with busybox and the workload.
	Initrd string `json:"initrd"`
	// SystemMap is the package's System.map. On Debian it is a stub without
	// symbols; it is exposed so tests can show that.
	SystemMap string `json:"system_map"`
	// Config is the kernel build configuration from the package.
	Config string `json:"config"`
	// KernelVersion is the kernel release (uname -r), e.g. 6.1.0-56-cloud-amd64.
	KernelVersion string `json:"kernel_version"`
	// KernelPackage is the concrete package name, e.g. linux-image-6.1.0-56-cloud-amd64.
	KernelPackage string `json:"kernel_package"`
	// KernelPackageVersion is the Debian version of KernelPackage.
	KernelPackageVersion string `json:"kernel_package_version"`
	// KernelPackageDeb is the downloaded kernel .deb.
	KernelPackageDeb string `json:"kernel_package_deb"`
	// BusyboxPackageVersion is the Debian version of busybox-static.
	BusyboxPackageVersion string `json:"busybox_package_version"`
	// BusyboxPackageDeb is the downloaded busybox-static .deb.
	BusyboxPackageDeb string `json:"busybox_package_deb"`
}

// PrepareOptions configure PrepareWith. The zero value is usable.
type PrepareOptions struct {
	// CacheDir holds downloads and built images; DefaultCacheDir() if empty.
	CacheDir string
	// Log receives progress messages; slog.Default() if nil.
	Log *slog.Logger
	// KernelMetapackage selects the kernel flavour; DefaultKernelMetapackage if empty.
	KernelMetapackage string
	// ResolveTTL is how long the package versions resolved with apt-cache are
	// reused without asking apt again (asking takes about a second). Zero
	// means 24 hours; negative means always ask.
	ResolveTTL time.Duration
}

// DefaultCacheDir returns $VMI_TESTGUEST_CACHE, else
// $XDG_CACHE_HOME/vmi-exporter/testguest, else ~/.cache/vmi-exporter/testguest.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("VMI_TESTGUEST_CACHE"); d != "" {
		return d, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("testguest: no cache directory: %w", err)
	}
	return filepath.Join(base, "vmi-exporter", "testguest"), nil
}

// Prepare fetches the kernel and busybox with apt (cached), builds the
// guest's vmi-writev with the Go toolchain (cached), and builds the
// initramfs (cached). cacheDir may be empty for DefaultCacheDir and log nil
// for slog.Default. A second call with the same package versions does no
// apt work and returns at once.
func Prepare(ctx context.Context, cacheDir string, log *slog.Logger) (*Assets, error) {
	return PrepareWith(ctx, PrepareOptions{CacheDir: cacheDir, Log: log})
}

// resolved records the package versions apt-cache reported.
type resolved struct {
	Time           time.Time `json:"time"`
	Meta           string    `json:"meta"`
	KernelPackage  string    `json:"kernel_package"`
	KernelVersion  string    `json:"kernel_version"`
	BusyboxVersion string    `json:"busybox_version"`
}

// PrepareWith is Prepare with all options.
func PrepareWith(ctx context.Context, o PrepareOptions) (*Assets, error) {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	dir := o.CacheDir
	if dir == "" {
		var err error
		if dir, err = DefaultCacheDir(); err != nil {
			return nil, err
		}
	}
	meta := o.KernelMetapackage
	if meta == "" {
		meta = DefaultKernelMetapackage
	}
	ttl := o.ResolveTTL
	if ttl == 0 {
		ttl = 24 * time.Hour
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("testguest: cache dir: %w", err)
	}
	// Several test binaries may prepare at once; one does the work.
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()

	res, err := resolveVersions(ctx, dir, meta, ttl, log)
	if err != nil {
		return nil, err
	}
	debs := filepath.Join(dir, "debs")
	kdeb, err := fetchDeb(ctx, debs, res.KernelPackage, res.KernelVersion, log)
	if err != nil {
		return nil, err
	}
	bdeb, err := fetchDeb(ctx, debs, busyboxPackage, res.BusyboxVersion, log)
	if err != nil {
		return nil, err
	}

	kdir := filepath.Join(dir, "kernel", fileSafe(res.KernelPackage+"_"+res.KernelVersion))
	if err := extractOnce(ctx, kdeb, kdir, "./boot/", log); err != nil {
		return nil, err
	}
	a := &Assets{
		KernelPackage:         res.KernelPackage,
		KernelPackageVersion:  res.KernelVersion,
		KernelPackageDeb:      kdeb,
		BusyboxPackageVersion: res.BusyboxVersion,
		BusyboxPackageDeb:     bdeb,
	}
	if err := findBootFiles(filepath.Join(kdir, "boot"), a); err != nil {
		return nil, fmt.Errorf("testguest: %s: %w", kdeb, err)
	}

	bbdir := filepath.Join(dir, "busybox", fileSafe(res.BusyboxVersion))
	if err := extractOnce(ctx, bdeb, bbdir, "./bin/busybox", log); err != nil {
		return nil, err
	}
	digest, err := ScriptsDigest()
	if err != nil {
		return nil, err
	}
	a.Initrd = filepath.Join(dir, "initramfs", fmt.Sprintf("initramfs-%s-%s.cpio.gz", fileSafe(res.BusyboxVersion), digest))
	if _, err := os.Stat(a.Initrd); err != nil {
		bb, err := os.ReadFile(filepath.Join(bbdir, "bin", "busybox"))
		if err != nil {
			return nil, fmt.Errorf("testguest: busybox binary: %w", err)
		}
		wv, err := buildWritev(ctx, dir, log)
		if err != nil {
			return nil, err
		}
		img, err := initramfsBytes(bb, wv)
		if err != nil {
			return nil, fmt.Errorf("testguest: build initramfs: %w", err)
		}
		if err := writeFileAtomic(a.Initrd, img); err != nil {
			return nil, err
		}
		log.Info("built initramfs", "path", a.Initrd, "bytes", len(img))
	}
	return a, nil
}

// resolveVersions finds the concrete kernel package behind the metapackage
// and the candidate versions, asking apt-cache at most once per ttl.
func resolveVersions(ctx context.Context, dir, meta string, ttl time.Duration, log *slog.Logger) (*resolved, error) {
	path := filepath.Join(dir, "resolved.json")
	var old *resolved
	if b, err := os.ReadFile(path); err == nil {
		var r resolved
		if json.Unmarshal(b, &r) == nil && r.Meta == meta && r.KernelPackage != "" && r.KernelVersion != "" && r.BusyboxVersion != "" {
			old = &r
			if ttl > 0 && time.Since(r.Time) < ttl {
				return old, nil
			}
		}
	}
	// One apt-cache call answers both: the metapackage's Depends names the
	// concrete package with its exact version.
	show := func() (*resolved, error) {
		out, err := run(ctx, "apt-cache", "", "show", "--no-all-versions", meta, busyboxPackage)
		if err != nil {
			return nil, err
		}
		return parseAptShow(out, meta)
	}
	r, err := show()
	if err != nil && old != nil {
		log.Warn("apt-cache failed; using previously resolved versions", "err", err)
		return old, nil
	}
	if err != nil {
		// A fresh machine may have no package lists yet.
		log.Warn("apt-cache failed; running apt-get update and retrying", "err", err)
		if _, uerr := run(ctx, "apt-get", "", "update"); uerr != nil {
			return nil, fmt.Errorf("testguest: resolve packages: %w (apt-get update: %v)", err, uerr)
		}
		if r, err = show(); err != nil {
			return nil, fmt.Errorf("testguest: resolve packages: %w", err)
		}
	}
	r.Time = time.Now()
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(path, b); err != nil {
		return nil, err
	}
	log.Info("resolved test guest packages", "kernel", r.KernelPackage, "version", r.KernelVersion, "busybox", r.BusyboxVersion)
	return r, nil
}

// parseAptShow reads "apt-cache show" stanzas for the metapackage and
// busybox-static.
func parseAptShow(out []byte, meta string) (*resolved, error) {
	r := &resolved{Meta: meta}
	var pkg string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		switch k {
		case "Package":
			pkg = v
		case "Version":
			if pkg == busyboxPackage {
				r.BusyboxVersion = v
			}
		case "Depends":
			if pkg != meta {
				continue
			}
			// e.g. "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)"
			for _, dep := range strings.Split(v, ",") {
				dep = strings.TrimSpace(dep)
				name, rest, _ := strings.Cut(dep, " ")
				if !strings.HasPrefix(name, "linux-image-") {
					continue
				}
				ver, ok := strings.CutPrefix(strings.TrimSpace(rest), "(= ")
				if !ok {
					return nil, fmt.Errorf("%s: dependency %q has no exact version", meta, dep)
				}
				r.KernelPackage = name
				r.KernelVersion = strings.TrimSuffix(ver, ")")
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	switch {
	case r.KernelPackage == "":
		return nil, fmt.Errorf("apt-cache: no linux-image dependency of %s", meta)
	case r.BusyboxVersion == "":
		return nil, fmt.Errorf("apt-cache: no version of %s", busyboxPackage)
	}
	return r, nil
}

// fetchDeb downloads pkg=ver with "apt-get download" unless it is cached,
// running "apt-get update" once if apt does not know the version.
func fetchDeb(ctx context.Context, dir, pkg, ver string, log *slog.Logger) (string, error) {
	final := filepath.Join(dir, fileSafe(pkg+"_"+ver)+".deb")
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, ".download-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	log.Info("downloading with apt-get", "package", pkg, "version", ver)
	if _, err := run(ctx, "apt-get", tmp, "download", pkg+"="+ver); err != nil {
		log.Warn("apt-get download failed; running apt-get update and retrying", "err", err)
		if _, uerr := run(ctx, "apt-get", "", "update"); uerr != nil {
			return "", fmt.Errorf("testguest: download %s=%s: %w (apt-get update: %v)", pkg, ver, err, uerr)
		}
		if _, err := run(ctx, "apt-get", tmp, "download", pkg+"="+ver); err != nil {
			return "", fmt.Errorf("testguest: download %s=%s: %w", pkg, ver, err)
		}
	}
	got, err := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if err != nil || len(got) != 1 {
		return "", fmt.Errorf("testguest: download %s=%s: expected one .deb, found %v", pkg, ver, got)
	}
	if err := os.Rename(got[0], final); err != nil {
		return "", fmt.Errorf("testguest: %w", err)
	}
	return final, nil
}

// extractOnce unpacks the entries of deb whose names start with prefix into
// dst (which it creates atomically), using dpkg-deb for the .deb container.
// Only a prefix is extracted: the kernel package's modules are not needed.
func extractOnce(ctx context.Context, deb, dst, prefix string, log *slog.Logger) error {
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dst), ".extract-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testguest: dpkg-deb: %w", err)
	}
	n, terr := untarPrefix(pipe, tmp, prefix)
	// Drain so dpkg-deb can finish even if untar stopped early.
	_, _ = io.Copy(io.Discard, pipe)
	werr := cmd.Wait()
	if terr != nil {
		return fmt.Errorf("testguest: extract %s: %w", deb, terr)
	}
	if werr != nil {
		return fmt.Errorf("testguest: %w", procerr.Error("dpkg-deb --fsys-tarfile "+deb, cmd.ProcessState, werr, stderr.String()))
	}
	if n == 0 {
		return fmt.Errorf("testguest: %s has no entries under %s", deb, prefix)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("testguest: %w", err)
	}
	log.Info("extracted package", "deb", filepath.Base(deb), "files", n, "dir", dst)
	return nil
}

// untarPrefix writes the regular files and directories under prefix.
func untarPrefix(r io.Reader, dst, prefix string) (int, error) {
	tr := tar.NewReader(r)
	n := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if !strings.HasPrefix(h.Name, prefix) {
			continue
		}
		rel := filepath.Clean(strings.TrimPrefix(h.Name, "./"))
		if rel == "." || strings.HasPrefix(rel, "..") || filepath.IsAbs(rel) {
			continue
		}
		p := filepath.Join(dst, rel)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return n, err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return n, err
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode&0o755)|0o600)
			if err != nil {
				return n, err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return n, err
			}
			n++
		}
	}
}

// findBootFiles fills the kernel paths and release from a package's /boot.
func findBootFiles(boot string, a *Assets) error {
	ents, err := os.ReadDir(boot)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		p := filepath.Join(boot, name)
		switch {
		case strings.HasPrefix(name, "vmlinuz-"):
			a.Kernel = p
			a.KernelVersion = strings.TrimPrefix(name, "vmlinuz-")
		case strings.HasPrefix(name, "System.map-"):
			a.SystemMap = p
		case strings.HasPrefix(name, "config-"):
			a.Config = p
		}
	}
	if a.Kernel == "" {
		return errors.New("no vmlinuz in /boot")
	}
	return nil
}

// run runs a command and returns its standard output; errors include stderr.
func run(ctx context.Context, name, dir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), procerr.Error(name+" "+strings.Join(args, " "), cmd.ProcessState, err, stderr.String())
	}
	return stdout.Bytes(), nil
}

func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// fileSafe makes a package version usable in a file name (epochs have ':').
func fileSafe(s string) string {
	return strings.NewReplacer(":", "%3a", "/", "_").Replace(s)
}

// lockDir takes an exclusive flock on dir/.lock.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("testguest: lock cache: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("testguest: lock cache: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

package testguest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// QEMUInstall is a QEMU unpacked from Debian packages into the cache, next
// to (not replacing) the installed one. Pass its fields to Options.
type QEMUInstall struct {
	// Version is the Debian version of qemu-system-x86.
	Version string `json:"version"`
	// Binary is qemu-system-x86_64.
	Binary string `json:"binary"`
	// DataDir is the ':'-separated -L list: the package's data directory,
	// then the system's seabios and ipxe-qemu directories (an unpacked QEMU
	// looks for firmware only relative to itself).
	DataDir string `json:"data_dir"`
	// ModuleDir holds the QEMU modules (the TCG accelerator is one).
	ModuleDir string `json:"module_dir"`
}

// Options returns o with the binary, data and module directories set.
func (q *QEMUInstall) Options(o Options) Options {
	o.QEMU, o.QEMUDataDir, o.QEMUModuleDir = q.Binary, q.DataDir, q.ModuleDir
	return o
}

// QEMUBookworm selects, in PrepareQEMU, the QEMU of Debian 12's main
// archive (7.2), whatever its current point release.
const QEMUBookworm = "bookworm"

// PrepareQEMU downloads qemu-system-x86, qemu-system-common and
// qemu-system-data with apt-get and unpacks them into the cache dir
// (cacheDir empty: DefaultCacheDir). version is a Debian version of
// qemu-system-x86 (the data package's version is the same without a binNMU
// suffix +bN), or QEMUBookworm for the versions "apt-cache madison" lists
// for bookworm/main. Shared libraries come from the system; if one is
// missing, install it with apt-get.
func PrepareQEMU(ctx context.Context, cacheDir, version string, log *slog.Logger) (*QEMUInstall, error) {
	if log == nil {
		log = slog.Default()
	}
	if cacheDir == "" {
		var err error
		if cacheDir, err = DefaultCacheDir(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockDir(cacheDir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	dataVersion := version
	if version == QEMUBookworm {
		var err error
		if version, err = madison(ctx, "qemu-system-x86", "bookworm/main"); err != nil {
			return nil, err
		}
		if dataVersion, err = madison(ctx, "qemu-system-data", "bookworm/main"); err != nil {
			return nil, err
		}
	} else if i := strings.LastIndex(version, "+b"); i > 0 && !strings.ContainsAny(version[i+2:], "+-~.") {
		dataVersion = version[:i]
	}
	root := filepath.Join(cacheDir, "qemu", fileSafe(version))
	pkgs := []struct{ name, version, prefix string }{
		{"qemu-system-x86", version, "./usr/bin/"},
		{"qemu-system-common", version, "./usr/lib/"},
		{"qemu-system-data", dataVersion, "./usr/share/qemu/"},
	}
	for _, p := range pkgs {
		deb, err := fetchDeb(ctx, filepath.Join(cacheDir, "debs"), p.name, p.version, log)
		if err != nil {
			return nil, err
		}
		if err := extractOnce(ctx, deb, filepath.Join(root, p.name), p.prefix, log); err != nil {
			return nil, err
		}
	}
	q := &QEMUInstall{
		Version:   version,
		Binary:    filepath.Join(root, "qemu-system-x86", "usr", "bin", "qemu-system-x86_64"),
		DataDir:   strings.Join([]string{filepath.Join(root, "qemu-system-data", "usr", "share", "qemu"), "/usr/share/seabios", "/usr/lib/ipxe/qemu"}, string(filepath.ListSeparator)),
		ModuleDir: filepath.Join(root, "qemu-system-common", "usr", "lib", "x86_64-linux-gnu", "qemu"),
	}
	for _, p := range []string{q.Binary, q.ModuleDir} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("testguest: qemu %s: %w", version, err)
		}
	}
	return q, nil
}

// madison returns the version of pkg that "apt-cache madison" lists for the
// archive component (e.g. "bookworm/main").
func madison(ctx context.Context, pkg, component string) (string, error) {
	out, err := run(ctx, "apt-cache", "", "madison", pkg)
	if err != nil {
		return "", fmt.Errorf("testguest: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, "|")
		if len(f) == 3 && strings.TrimSpace(f[0]) == pkg && strings.Contains(f[2], " "+component+" ") {
			return strings.TrimSpace(f[1]), nil
		}
	}
	return "", fmt.Errorf("testguest: apt-cache madison %s: no version in %s", pkg, component)
}

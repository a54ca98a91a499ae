package linux

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/profile"
	"github.com/vmi-exporter/vmi-exporter/introspect/vmlinux"
)

// Bounds of the banner scan: guest memory is hostile, and a guest may plant
// many fake banners.
const (
	scanChunk     = 1 << 20
	maxBannerLen  = 512
	maxBanners    = 16
	maxScanMemory = 64 << 30
)

var bannerPrefix = []byte("Linux version ")

// ProfileSource says where the profile of a guest's kernel comes from.
// The zero value takes the profile cached, in the default cache directory,
// under a banner found in guest memory.
type ProfileSource struct {
	// KernelImage is the kernel's image (vmlinuz/bzImage or vmlinux):
	// symbols from its kallsyms, types from its BTF; the built profile
	// is cached.
	KernelImage string
	// SystemMap and ISF override the profile's symbols (and, for ISF,
	// types); without KernelImage or a cached profile, ISF alone serves
	// as the profile.
	SystemMap, ISF string
	// CacheDir holds built profiles (default profile.DefaultCacheDir).
	CacheDir string
}

// Discover finds the Linux kernel a paused guest runs: its profile from
// src (FindProfile), then the OS layer over it (New).
func Discover(m Memory, src ProfileSource, opts Options) (*OS, error) {
	prof, err := FindProfile(m, src, opts.Logger)
	if err != nil {
		return nil, err
	}
	return New(m, prof, opts)
}

// FindProfile finds the profile of the guest's kernel: built from the
// source's kernel image (cached), or else taken from the cache under a
// banner found in guest memory, or else from the source's ISF file. An
// error wrapping ErrKernelNotFound means guest memory holds no Linux
// kernel banner at all (it may run another OS). log may be nil.
func FindProfile(mem driver.PhysReader, src ProfileSource, log *slog.Logger) (*profile.Profile, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := src.CacheDir
	if dir == "" {
		var err error
		if dir, err = profile.DefaultCacheDir(); err != nil {
			return nil, fmt.Errorf("profile cache: %w", err)
		}
	}
	cache := &profile.Cache{Dir: dir}
	if src.KernelImage != "" {
		return vmlinux.Profile(src.KernelImage, vmlinux.Options{Cache: cache, SystemMap: src.SystemMap, ISF: src.ISF, Logger: log})
	}
	banners, err := FindBanners(mem, maxBanners)
	if err != nil {
		return nil, fmt.Errorf("find kernel banner: %w", err)
	}
	for _, b := range banners {
		p, err := cache.Load(b)
		if err == nil {
			log.Info("profile from cache", "banner", b)
			if err := profile.ApplyOverrides(p, profile.Overrides{SystemMap: src.SystemMap, ISF: src.ISF, Logger: log}); err != nil {
				return nil, err
			}
			return p, nil
		}
		if !errors.Is(err, profile.ErrCacheMiss) {
			log.Warn("profile cache entry unreadable", "banner", b, "err", err)
		}
	}
	if src.ISF != "" && len(banners) > 0 {
		isf, err := profile.OpenISF(src.ISF)
		if err != nil {
			return nil, err
		}
		if isf.Metadata.Windows != nil {
			return nil, fmt.Errorf("ISF %s describes a Windows kernel", src.ISF)
		}
		// The OS layer finds the KASLR slide by the banner, which an ISF
		// does not carry: take the one the guest shows.
		isf.Profile.Name = banners[0]
		if err := profile.ApplyOverrides(isf.Profile, profile.Overrides{SystemMap: src.SystemMap, Logger: log}); err != nil {
			return nil, err
		}
		return isf.Profile, nil
	}
	if len(banners) == 0 {
		return nil, fmt.Errorf("no Linux kernel banner in guest memory: %w", ErrKernelNotFound)
	}
	return nil, fmt.Errorf("no cached profile for kernel %q: set profile.kernel_image to its vmlinuz (or profile.isf)", banners[0])
}

// FindBanners scans guest physical memory from address 0 until the end of
// RAM for Linux kernel banners ("Linux version ..." up to the newline) and
// returns at most max distinct ones, in address order. The real banner is
// among them; others may be copies (or forgeries) the guest holds in
// memory, which callers tell apart by looking each up.
func FindBanners(mem driver.PhysReader, max int) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	buf := make([]byte, scanChunk+maxBannerLen)
	for pa := uint64(0); pa < maxScanMemory && len(out) < max; pa += scanChunk {
		n := len(buf)
		err := mem.ReadPhysical(introspect.Pa(pa), buf)
		if err != nil {
			// The last chunk may extend past RAM: retry without overlap.
			n = scanChunk
			if err = mem.ReadPhysical(introspect.Pa(pa), buf[:n]); err != nil {
				if errors.Is(err, driver.ErrOutOfRange) {
					break
				}
				return out, fmt.Errorf("read %#x: %w", pa, err)
			}
		}
		window := buf[:n]
		for off := 0; off < scanChunk && off < n; {
			i := bytes.Index(window[off:], bannerPrefix)
			if i < 0 || off+i >= scanChunk {
				break
			}
			start := off + i
			end := bytes.IndexByte(window[start:min(n, start+maxBannerLen)], '\n')
			if end > 0 {
				b := string(window[start : start+end])
				if isPrintable(b) && !seen[b] {
					seen[b] = true
					out = append(out, b)
					if len(out) == max {
						break
					}
				}
			}
			off = start + len(bannerPrefix)
		}
	}
	return out, nil
}

func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

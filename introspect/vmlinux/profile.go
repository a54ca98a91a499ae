package vmlinux

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/vmi-exporter/vmi-exporter/introspect/profile"
)

// Options tell Profile where to cache and what overrides the image.
type Options struct {
	// Cache, if set, holds profiles built before; a new build is stored.
	Cache *profile.Cache
	// SystemMap, if set, is the path of a System.map whose symbols
	// override the image's kallsyms.
	SystemMap string
	// ISF, if set, is the path of a Volatility 3 ISF file (plain or .xz)
	// describing this kernel; its symbols and types override the image's.
	ISF string
	// Override, if set, is a profile whose symbols and types override
	// the image's, applied after ISF.
	Override *profile.Profile
	// Logger receives cache misses and override notes; nil discards.
	Logger *slog.Logger
}

// BuildProfile makes a profile from a parsed image: symbols from its
// kallsyms, struct and union layouts from its BTF, and the banner as name.
func BuildProfile(im *Image) (*profile.Profile, error) {
	spec, err := im.BTF()
	if err != nil {
		return nil, err
	}
	types, err := profile.BTFTypes(spec)
	if err != nil {
		return nil, fmt.Errorf("vmlinux .BTF: %w", err)
	}
	p := profile.New(im.Banner)
	p.Types = types
	p.Symbols = im.Kallsyms.Map()
	return p, nil
}

// Profile returns the profile of the kernel image at path (a bzImage such
// as /boot/vmlinuz-* or a vmlinux ELF), from the cache when it holds one
// for this image, then applies the overrides. The cache is keyed by the
// kernel banner; an alias keyed by the image's SHA-256 finds it without
// decompressing the image.
func Profile(path string, opts Options) (*profile.Profile, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kernel image: %w", err)
	}
	sum := sha256.Sum256(raw)
	alias := "vmlinuz-sha256:" + hex.EncodeToString(sum[:])
	var p *profile.Profile
	if opts.Cache != nil {
		p, err = opts.Cache.LoadAlias(alias)
		if err != nil {
			if !errors.Is(err, profile.ErrCacheMiss) {
				log.Warn("profile cache unreadable; rebuilding", "image", path, "err", err)
			}
			p = nil
		}
	}
	if p == nil {
		im, err := Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("kernel image %s: %w", path, err)
		}
		p, err = BuildProfile(im)
		if err != nil {
			return nil, fmt.Errorf("kernel image %s: %w", path, err)
		}
		if opts.Cache != nil {
			if err := opts.Cache.Store(p); err != nil {
				log.Warn("cannot cache profile", "image", path, "err", err)
			} else if err := opts.Cache.StoreAlias(alias, p.Name); err != nil {
				log.Warn("cannot cache profile alias", "image", path, "err", err)
			}
		}
	}
	err = profile.ApplyOverrides(p, profile.Overrides{SystemMap: opts.SystemMap, ISF: opts.ISF, Profile: opts.Override, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	return p, nil
}

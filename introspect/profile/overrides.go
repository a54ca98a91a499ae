package profile

import (
	"fmt"
	"log/slog"
)

// Overrides name what replaces parts of a Linux kernel's profile, however
// the profile was obtained (built from the kernel image, loaded from the
// cache by banner, or read from an ISF file).
type Overrides struct {
	// SystemMap, if set, is the path of a System.map whose symbols
	// override the profile's.
	SystemMap string
	// ISF, if set, is the path of a Volatility 3 ISF file (plain or .xz)
	// describing this kernel; its symbols and types override the
	// profile's. A Windows ISF is refused.
	ISF string
	// Profile, if set, is a profile whose symbols and types override,
	// applied after ISF.
	Profile *Profile
	// Logger receives a note per override that moved symbols; nil
	// discards.
	Logger *slog.Logger
}

// ApplyOverrides applies o to p, in order: the System.map's symbols, the
// ISF's symbols and types, then o.Profile.
func ApplyOverrides(p *Profile, o Overrides) error {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.SystemMap != "" {
		syms, err := LoadSystemMap(o.SystemMap)
		if err != nil {
			return err
		}
		if n := p.OverrideSymbols(syms); n > 0 {
			log.Info("System.map moved symbols", "path", o.SystemMap, "changed", n)
		}
	}
	if o.ISF != "" {
		isf, err := OpenISF(o.ISF)
		if err != nil {
			return err
		}
		if isf.Metadata.Windows != nil {
			return fmt.Errorf("ISF %s describes a Windows kernel, not %q", o.ISF, p.Name)
		}
		if n := p.Override(isf.Profile); n > 0 {
			log.Info("ISF moved symbols", "path", o.ISF, "changed", n)
		}
	}
	if o.Profile != nil {
		if n := p.Override(o.Profile); n > 0 {
			log.Info("override profile moved symbols", "override", o.Profile.Name, "changed", n)
		}
	}
	return nil
}

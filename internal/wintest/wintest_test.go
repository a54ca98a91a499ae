package wintest

import "testing"

// The embedded subset must agree with the real profile it was cut from.
func TestSubsetMatchesProfile(t *testing.T) {
	sub, err := LoadProfile("win10-subset")
	if err != nil {
		t.Fatal(err)
	}
	full, err := LoadProfile("win10-22H2")
	if err != nil {
		t.Fatal(err)
	}
	if *sub.Metadata.Windows != *full.Metadata.Windows {
		t.Errorf("metadata %+v vs %+v", sub.Metadata.Windows, full.Metadata.Windows)
	}
	for name, a := range sub.Profile.Symbols {
		if b, err := full.Profile.Symbol(name); err != nil || a != b {
			t.Errorf("symbol %s: %#x vs %#x %v", name, a, b, err)
		}
	}
	n := 0
	for name, s := range sub.Profile.Types {
		fs, err := full.Profile.Struct(name)
		if err != nil || fs.Size != s.Size || fs.Union != s.Union {
			t.Errorf("type %s: %+v vs %+v %v", name, s, fs, err)
			continue
		}
		for fname, f := range s.Fields {
			ff := fs.Fields[fname]
			if ff.Offset != f.Offset || ff.Type.Size != f.Type.Size || ff.Type.Kind != f.Type.Kind || ff.Type.BitPos != f.Type.BitPos || ff.Type.BitLen != f.Type.BitLen {
				t.Errorf("%s.%s: %+v vs %+v", name, fname, f, ff)
			}
			n++
		}
	}
	if n < 40 {
		t.Errorf("only %d fields compared", n)
	}
}

// Guests build from every layout.
func TestNewGuest(t *testing.T) {
	for _, name := range append(ProfileNames, "win10-subset") {
		isf, err := LoadProfile(name)
		if err != nil {
			t.Fatal(err)
		}
		g, err := New(isf, Options{VCPUs: 2})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(g.KPCR) != 2 || g.System == nil || g.System.PID != 4 {
			t.Errorf("%s: guest %+v", name, g)
		}
		p, err := g.NewProcess("a.exe", 8, g.System, 2)
		if err != nil {
			t.Fatal(err)
		}
		if err := g.SetHandle(p, 512*512*256*4, g.Volume); err == nil {
			t.Errorf("%s: handle beyond a level-2 table accepted", name)
		}
	}
}

package profile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmi-exporter/vmi-exporter/introspect/profile/pdb"
)

// DefaultSymbolServer is Microsoft's public symbol server.
const DefaultSymbolServer = "https://msdl.microsoft.com/download/symbols"

// MaxPDBBytes bounds a PDB downloaded from a symbol server.
const MaxPDBBytes = 256 << 20

// ErrNoProfile is wrapped when the store has no profile for a PDB.
var ErrNoProfile = errors.New("no profile for this kernel")

// ErrSymbolServer is wrapped by every failure to fetch from a symbol server
// (offline, refused, HTTP error), so callers can tell "could not download"
// from "downloaded but unusable".
var ErrSymbolServer = errors.New("symbol server unavailable")

// ErrPDBNotConverted is wrapped when a PDB from the store or a symbol
// server could not be converted into a profile (malformed, truncated, or
// not the PDB that was asked for); the conversion error is wrapped too.
var ErrPDBNotConverted = errors.New("PDB could not be converted to a profile")

// SymbolStore finds Windows kernel profiles on disk, laid out as a symbol
// store: <Dir>/<pdb name>/<GUID><age>.json[.xz], or <GUID>-<age> as
// Volatility's and JPCERT's ISF collections name them. On a miss it
// converts the PDB kept in <Dir>/<pdb name>/<GUID><age>/<pdb name>,
// fetching it from a symbol server first when it is not there, and saves
// the profile as <Dir>/<pdb name>/<GUID><age>.json.
type SymbolStore struct {
	Dir string
	// Server is the symbol server URL; "" disables downloads.
	Server string
	// Client performs downloads; nil means a client with a 60 s timeout.
	Client *http.Client
}

// NewSymbolStore returns a store in dir that downloads from Microsoft's
// symbol server on a miss.
func NewSymbolStore(dir string) *SymbolStore {
	return &SymbolStore{Dir: dir, Server: DefaultSymbolServer}
}

// CodeView is a PE image's RSDS debug record: which PDB describes it.
type CodeView struct {
	PDB  string // file name, e.g. "ntkrnlmp.pdb"
	GUID [16]byte
	Age  uint32
}

// GUIDString renders the GUID as symbol servers do: the first three fields
// as little-endian integers, then the last eight bytes, in upper-case hex
// (the PDB's own info stream stores it the same way).
func (c CodeView) GUIDString() string { return pdb.Info{GUID: c.GUID}.GUIDString() }

// Info returns the record as a PDBInfo.
func (c CodeView) Info() PDBInfo {
	return PDBInfo{Database: c.PDB, GUID: c.GUIDString(), Age: c.Age}
}

// safeName rejects PDB names that could escape the store directory or the
// server path (they come from guest memory).
func safeName(name string) error {
	if name == "" || len(name) > 255 || name == "." || name == ".." ||
		strings.ContainsAny(name, `/\:`) || strings.ContainsRune(name, 0) {
		return fmt.Errorf("PDB name %q: %w", name, ErrNoProfile)
	}
	return nil
}

// Path returns the store path of an existing profile for the PDB (trying
// .json.xz then .json).
func (s *SymbolStore) Path(info PDBInfo) (string, error) {
	if err := safeName(info.Database); err != nil {
		return "", err
	}
	dir := filepath.Join(s.Dir, info.Database)
	// Symbol servers write <GUID><age>; Volatility's symbol packs and
	// JPCERT's collection write <GUID>-<age>.
	for _, name := range []string{info.Key(), fmt.Sprintf("%s-%d", strings.ToUpper(info.GUID), info.Age)} {
		for _, ext := range []string{".json.xz", ".json"} {
			p := filepath.Join(dir, name+ext)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("%s/%s in %s: %w", info.Database, info.Key(), s.Dir, ErrNoProfile)
}

// Load returns the profile for a PDB from the store, after checking that
// the file's own metadata names the same PDB.
func (s *SymbolStore) Load(info PDBInfo) (*ISF, error) {
	p, err := s.Path(info)
	if err != nil {
		return nil, err
	}
	isf, err := OpenISF(p)
	if err != nil {
		return nil, err
	}
	if w := isf.Metadata.Windows; w != nil && !strings.EqualFold(w.Key(), info.Key()) {
		return nil, fmt.Errorf("%s holds %s, want %s: %w", p, w.Key(), info.Key(), ErrISF)
	}
	return isf, nil
}

// ForCodeView returns the profile for a kernel's CodeView record. On a miss
// it converts the PDB already in the store or, with a server configured,
// downloads it first, then saves and loads the converted profile. A failed
// download wraps ErrSymbolServer, a failed conversion ErrPDBNotConverted;
// both are joined with ErrNoProfile.
func (s *SymbolStore) ForCodeView(ctx context.Context, cv CodeView) (*ISF, error) {
	info := cv.Info()
	isf, err := s.Load(info)
	if err == nil || !errors.Is(err, ErrNoProfile) {
		return isf, err
	}
	if serr := safeName(info.Database); serr != nil {
		return nil, serr
	}
	pdbPath := filepath.Join(s.Dir, info.Database, info.Key(), info.Database)
	if st, serr := os.Stat(pdbPath); serr != nil || !st.Mode().IsRegular() {
		if s.Server == "" {
			return nil, err
		}
		var derr error
		if pdbPath, derr = s.Download(ctx, info); derr != nil {
			return nil, errors.Join(err, derr)
		}
	}
	if cerr := s.Convert(pdbPath, info); cerr != nil {
		return nil, fmt.Errorf("%w: %s: %w: %w", ErrNoProfile, pdbPath, ErrPDBNotConverted, cerr)
	}
	return s.Load(info)
}

// Convert turns the PDB at pdbPath into an ISF profile saved as
// <Dir>/<pdb name>/<GUID><age>.json, after checking that the PDB is the one
// info names. The file appears atomically (temporary file and rename), so
// a concurrent Load never sees half a profile.
func (s *SymbolStore) Convert(pdbPath string, info PDBInfo) error {
	if err := safeName(info.Database); err != nil {
		return err
	}
	f, err := pdb.Open(pdbPath)
	if err != nil {
		return err
	}
	in, err := f.Info()
	if err != nil {
		return err
	}
	dbi, err := f.DBI()
	if err != nil {
		return err
	}
	if got := (PDBInfo{GUID: in.GUIDString(), Age: dbi.Age}); !strings.EqualFold(got.Key(), info.Key()) {
		return fmt.Errorf("PDB is %s, want %s: %w", got.Key(), info.Key(), pdb.ErrFormat)
	}
	dir := filepath.Join(s.Dir, info.Database)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("symbol store: %w", err)
	}
	// Plain JSON: a one-off write that later loads read faster than xz.
	tmp, err := os.CreateTemp(dir, ".convert-*")
	if err != nil {
		return fmt.Errorf("symbol store: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = f.WriteISF(tmp, pdb.Options{Database: info.Database})
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, info.Key()+".json")); err != nil {
		return fmt.Errorf("symbol store: %w", err)
	}
	return nil
}

// Download fetches <Server>/<pdb>/<GUID><age>/<pdb> into the store and
// returns the file's path.
func (s *SymbolStore) Download(ctx context.Context, info PDBInfo) (string, error) {
	if err := safeName(info.Database); err != nil {
		return "", err
	}
	if s.Server == "" {
		return "", fmt.Errorf("no symbol server configured: %w", ErrSymbolServer)
	}
	u, err := url.Parse(s.Server)
	if err != nil {
		return "", fmt.Errorf("symbol server %q: %w: %w", s.Server, ErrSymbolServer, err)
	}
	u.Path = path.Join(u.Path, info.Database, info.Key(), info.Database)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", fmt.Errorf("symbol server request: %w: %w", ErrSymbolServer, err)
	}
	req.Header.Set("User-Agent", "Microsoft-Symbol-Server/10.0.0.0") // what msdl expects
	c := s.Client
	if c == nil {
		c = &http.Client{Timeout: 60 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("download %s (offline?): %w: %w", u, ErrSymbolServer, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("download %s: HTTP %s: %w", u, resp.Status, ErrSymbolServer)
	}
	dir := filepath.Join(s.Dir, info.Database, info.Key())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("symbol store: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".download-*")
	if err != nil {
		return "", fmt.Errorf("symbol store: %w", err)
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, io.LimitReader(resp.Body, MaxPDBBytes+1))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("download %s: %w: %w", u, ErrSymbolServer, err)
	}
	if n > MaxPDBBytes {
		return "", fmt.Errorf("download %s: larger than %d bytes: %w", u, MaxPDBBytes, ErrSymbolServer)
	}
	dst := filepath.Join(dir, info.Database)
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("symbol store: %w", err)
	}
	return dst, nil
}

// ISFFile is a single ISF file given by the user instead of a store. Its
// ForCodeView checks that the file describes the kernel's PDB.
type ISFFile string

// ForCodeView loads the file and checks its PDB GUID and age against cv.
func (f ISFFile) ForCodeView(_ context.Context, cv CodeView) (*ISF, error) {
	isf, err := OpenISF(string(f))
	if err != nil {
		return nil, err
	}
	w := isf.Metadata.Windows
	if w == nil {
		return nil, fmt.Errorf("%s is not a Windows profile: %w", f, ErrNoProfile)
	}
	if want := cv.Info(); !strings.EqualFold(w.Key(), want.Key()) || !strings.EqualFold(w.Database, want.Database) {
		return nil, fmt.Errorf("%s describes %s/%s, the kernel is %s/%s: %w", f, w.Database, w.Key(), want.Database, want.Key(), ErrNoProfile)
	}
	return isf, nil
}

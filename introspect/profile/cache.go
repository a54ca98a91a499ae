package profile

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/gob"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ErrCacheMiss is wrapped when the cache holds no profile of a name.
var ErrCacheMiss = errors.New("profile not cached")

// CacheVersion is the version of the cache file format and of the
// profile builders' output. Files of another version are misses, so a
// build that converts more than an old one did is not hidden by the cache.
const CacheVersion = 1

// cacheMagic starts every cache file.
const cacheMagic = "VMIPROF\x00"

// Cache stores built profiles on disk, keyed by a hash of the profile's
// Name (for Linux the kernel banner, which the OS layer also reads from
// guest memory, so a running guest finds its profile without the image).
type Cache struct {
	// Dir holds the cache files; it is created on Store.
	Dir string
}

// DefaultCacheDir returns the per-user cache directory for profiles,
// $XDG_CACHE_HOME/vmi-exporter/profiles or its platform equivalent.
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("profile cache: %w", err)
	}
	return filepath.Join(d, "vmi-exporter", "profiles"), nil
}

// Path returns the file that holds the profile of the given name.
func (c Cache) Path(name string) string {
	h := sha256.Sum256([]byte(name))
	return filepath.Join(c.Dir, hex.EncodeToString(h[:16])+".profile")
}

// cacheHeader precedes the gob-encoded profile.
type cacheHeader struct {
	Magic   [8]byte
	Version uint32
	_       uint32
	Length  uint64 // of the gob payload
}

// Load returns the cached profile of the given name. It wraps ErrCacheMiss
// when there is none, or only one of another format version.
func (c Cache) Load(name string) (*Profile, error) {
	path := c.Path(name)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("profile cache %s: %w", path, ErrCacheMiss)
	}
	if err != nil {
		return nil, fmt.Errorf("profile cache: %w", err)
	}
	defer f.Close()
	p, err := readCached(bufio.NewReaderSize(f, 1<<16))
	if err != nil {
		return nil, fmt.Errorf("profile cache %s: %w", path, err)
	}
	if p.Name != name {
		// A hash collision, or a file renamed by hand.
		return nil, fmt.Errorf("profile cache %s holds %q: %w", path, p.Name, ErrCacheMiss)
	}
	return p, nil
}

func readCached(r io.Reader) (*Profile, error) {
	var h cacheHeader
	if err := binary.Read(r, binary.LittleEndian, &h); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if string(h.Magic[:]) != cacheMagic {
		return nil, errors.New("not a profile cache file")
	}
	if h.Version != CacheVersion {
		return nil, fmt.Errorf("format version %d, want %d: %w", h.Version, CacheVersion, ErrCacheMiss)
	}
	var p Profile
	if err := gob.NewDecoder(io.LimitReader(r, int64(h.Length))).Decode(&p); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if p.Symbols == nil {
		p.Symbols = map[string]uint64{}
	}
	if p.Types == nil {
		p.Types = map[string]*Struct{}
	}
	return &p, nil
}

// Store writes p to the cache, atomically replacing an older file.
func (c Cache) Store(p *Profile) error {
	if p.Name == "" {
		return errors.New("profile cache: profile has no name")
	}
	var payload bytes.Buffer
	if err := gob.NewEncoder(&payload).Encode(p); err != nil {
		return fmt.Errorf("profile cache: encode %q: %w", p.Name, err)
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return fmt.Errorf("profile cache: %w", err)
	}
	tmp, err := os.CreateTemp(c.Dir, ".profile-*")
	if err != nil {
		return fmt.Errorf("profile cache: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename this fails harmlessly
	h := cacheHeader{Version: CacheVersion, Length: uint64(payload.Len())}
	copy(h.Magic[:], cacheMagic)
	w := bufio.NewWriter(tmp)
	err = binary.Write(w, binary.LittleEndian, &h)
	if err == nil {
		_, err = payload.WriteTo(w)
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), c.Path(p.Name))
	}
	if err != nil {
		return fmt.Errorf("profile cache: store %q: %w", p.Name, err)
	}
	return nil
}

// aliasPath returns the file that maps an alias to a profile name.
func (c Cache) aliasPath(alias string) string {
	h := sha256.Sum256([]byte(alias))
	return filepath.Join(c.Dir, hex.EncodeToString(h[:16])+".alias")
}

// maxAlias bounds an alias file: it holds one profile name.
const maxAlias = 4096

// StoreAlias records that alias (e.g. a hash of a kernel image file) names
// the profile called name, so that a later Lookup finds the profile
// without rebuilding it to learn its name.
func (c Cache) StoreAlias(alias, name string) error {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return fmt.Errorf("profile cache: %w", err)
	}
	tmp, err := os.CreateTemp(c.Dir, ".alias-*")
	if err != nil {
		return fmt.Errorf("profile cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(name)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), c.aliasPath(alias))
	}
	if err != nil {
		return fmt.Errorf("profile cache: alias: %w", err)
	}
	return nil
}

// LoadAlias returns the cached profile an alias names.
func (c Cache) LoadAlias(alias string) (*Profile, error) {
	f, err := os.Open(c.aliasPath(alias))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("profile cache alias: %w", ErrCacheMiss)
	}
	if err != nil {
		return nil, fmt.Errorf("profile cache alias: %w", err)
	}
	defer f.Close()
	name, err := io.ReadAll(io.LimitReader(f, maxAlias))
	if err != nil {
		return nil, fmt.Errorf("profile cache alias: %w", err)
	}
	return c.Load(string(name))
}

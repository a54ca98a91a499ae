package profile

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
)

// ErrCacheMiss is wrapped when the cache holds no profile of a name.
var ErrCacheMiss = errors.New("profile not cached")

// CacheVersion is the version of the cache file format and of the
// profile builders' output. Files of another version are misses, so a
// build that converts more than an old one did is not hidden by the cache.
const CacheVersion = 2

// maxCacheFile bounds the payload a cache file may declare; a distribution
// kernel's profile takes about 3 MiB.
const maxCacheFile = 1 << 30

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

// cacheHeader precedes the encoded profile.
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
	if h.Length > maxCacheFile {
		return nil, fmt.Errorf("payload of %d bytes: %w", h.Length, errCorrupt)
	}
	payload := make([]byte, h.Length)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	p, err := decodeProfile(payload)
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return p, nil
}

// Store writes p to the cache, atomically replacing an older file.
func (c Cache) Store(p *Profile) error {
	if p.Name == "" {
		return errors.New("profile cache: profile has no name")
	}
	payload := bytes.NewBuffer(encodeProfile(p))
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

// The cache payload is a compact binary encoding rather than gob: decoding
// gob allocated every field's element types anew and took ~100 ms for a
// distribution kernel; this layout shares one string and one type table.
//
//	uvarint len, bytes       all strings, concatenated
//	uvarint n, n × string    string table: uvarint offset, uvarint length
//	uvarint n, n × type      kind u8, name string id, uvarint size,
//	                         uvarint elem (type id + 1, 0 for none; always
//	                         an earlier type, so there are no cycles),
//	                         uvarint count, bitpos u8, bitlen u8
//	string id                profile name
//	uvarint n, n × symbol    string id, u64 address
//	uvarint n, n × struct    string id, uvarint size, union u8, uvarint m,
//	                         m × (string id, uvarint offset, type id)

// typeKey identifies a Type by value, its element by id.
type typeKey struct {
	kind           Kind
	name           string
	size, count    uint64
	elem           int
	bitPos, bitLen uint8
}

type encoder struct {
	buf     []byte
	strs    []byte
	strIDs  map[string]int
	strTab  [][2]int
	typeIDs map[typeKey]int
	types   []typeKey
}

func (e *encoder) str(s string) int {
	if id, ok := e.strIDs[s]; ok {
		return id
	}
	id := len(e.strTab)
	e.strIDs[s] = id
	e.strTab = append(e.strTab, [2]int{len(e.strs), len(s)})
	e.strs = append(e.strs, s...)
	return id
}

// typ returns the id of t, assigning ids to its elements first.
func (e *encoder) typ(t *Type, depth int) int {
	k := typeKey{kind: t.Kind, name: t.Name, size: t.Size, count: t.Count, bitPos: t.BitPos, bitLen: t.BitLen}
	if t.Elem != nil && depth < maxElemDepth*4 {
		k.elem = e.typ(t.Elem, depth+1) + 1
	}
	if id, ok := e.typeIDs[k]; ok {
		return id
	}
	e.str(k.name)
	id := len(e.types)
	e.typeIDs[k] = id
	e.types = append(e.types, k)
	return id
}

func (e *encoder) uvarint(v uint64) { e.buf = binary.AppendUvarint(e.buf, v) }

func encodeProfile(p *Profile) []byte {
	e := &encoder{strIDs: map[string]int{}, typeIDs: map[typeKey]int{}}
	// First pass: intern strings and types, in a deterministic order.
	e.str(p.Name)
	symNames := sortedKeys(p.Symbols)
	for _, n := range symNames {
		e.str(n)
	}
	structNames := sortedKeys(p.Types)
	fieldTypes := map[*Struct][]int{}
	for _, sn := range structNames {
		s := p.Types[sn]
		e.str(sn)
		var ids []int
		for _, fn := range sortedKeys(s.Fields) {
			f := s.Fields[fn]
			e.str(fn)
			ids = append(ids, e.typ(&f.Type, 0))
		}
		fieldTypes[s] = ids
	}
	e.uvarint(uint64(len(e.strs)))
	e.buf = append(e.buf, e.strs...)
	e.uvarint(uint64(len(e.strTab)))
	for _, s := range e.strTab {
		e.uvarint(uint64(s[0]))
		e.uvarint(uint64(s[1]))
	}
	e.uvarint(uint64(len(e.types)))
	for _, t := range e.types {
		e.buf = append(e.buf, byte(t.kind))
		e.uvarint(uint64(e.strIDs[t.name]))
		e.uvarint(t.size)
		e.uvarint(uint64(t.elem))
		e.uvarint(t.count)
		e.buf = append(e.buf, t.bitPos, t.bitLen)
	}
	e.uvarint(uint64(e.strIDs[p.Name]))
	e.uvarint(uint64(len(symNames)))
	for _, n := range symNames {
		e.uvarint(uint64(e.strIDs[n]))
		e.buf = binary.LittleEndian.AppendUint64(e.buf, p.Symbols[n])
	}
	e.uvarint(uint64(len(structNames)))
	for _, sn := range structNames {
		s := p.Types[sn]
		e.uvarint(uint64(e.strIDs[sn]))
		e.uvarint(s.Size)
		union := byte(0)
		if s.Union {
			union = 1
		}
		e.buf = append(e.buf, union)
		names := sortedKeys(s.Fields)
		e.uvarint(uint64(len(names)))
		for i, fn := range names {
			e.uvarint(uint64(e.strIDs[fn]))
			e.uvarint(s.Fields[fn].Offset)
			e.uvarint(uint64(fieldTypes[s][i]))
		}
	}
	return e.buf
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// decoder reads the payload; every count and id is checked against what
// the remaining input can hold, so a corrupt file is an error.
type decoder struct {
	b   []byte
	err error
}

var errCorrupt = errors.New("corrupt profile cache payload")

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.err = errCorrupt
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) u64() uint64 {
	if d.err != nil || len(d.b) < 8 {
		d.err = errCorrupt
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

// count reads a count of items of at least minSize encoded bytes each.
func (d *decoder) count(minSize int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/minSize) {
		d.err = errCorrupt
		return 0
	}
	return int(n)
}

// id reads an index below n.
func (d *decoder) id(n int) int {
	v := d.uvarint()
	if v >= uint64(n) {
		d.err = errCorrupt
		return 0
	}
	return int(v)
}

// str reads a string id and returns the string, "" on error.
func (d *decoder) str(strs []string) string {
	i := d.id(len(strs))
	if d.err != nil {
		return ""
	}
	return strs[i]
}

// typ reads a type id and returns the type, the zero Type on error.
func (d *decoder) typ(types []Type) Type {
	i := d.id(len(types))
	if d.err != nil {
		return Type{}
	}
	return types[i]
}

func decodeProfile(b []byte) (*Profile, error) {
	d := &decoder{b: b}
	slen := d.uvarint()
	if d.err != nil || slen > uint64(len(d.b)) {
		return nil, errCorrupt
	}
	all := string(d.b[:slen]) // one allocation for every string
	d.b = d.b[slen:]
	strs := make([]string, d.count(2))
	for i := range strs {
		off, l := d.uvarint(), d.uvarint()
		if off > uint64(len(all)) || l > uint64(len(all))-off {
			return nil, errCorrupt
		}
		strs[i] = all[off : off+l]
	}
	types := make([]Type, d.count(7))
	for i := range types {
		t := &types[i]
		t.Kind = Kind(d.byte())
		t.Name = d.str(strs)
		t.Size = d.uvarint()
		if elem := d.id(i + 1); elem > 0 {
			t.Elem = &types[elem-1]
		}
		t.Count = d.uvarint()
		t.BitPos, t.BitLen = d.byte(), d.byte()
	}
	p := &Profile{Name: d.str(strs)}
	nsyms := d.count(9)
	p.Symbols = make(map[string]uint64, nsyms)
	for range nsyms {
		name := d.str(strs)
		p.Symbols[name] = d.u64()
	}
	nstructs := d.count(4)
	p.Types = make(map[string]*Struct, nstructs)
	for range nstructs {
		s := &Struct{Name: d.str(strs), Size: d.uvarint(), Union: d.byte() != 0}
		nfields := d.count(3)
		s.Fields = make(map[string]Field, nfields)
		for range nfields {
			name := d.str(strs)
			off := d.uvarint()
			s.Fields[name] = Field{Name: name, Offset: off, Type: d.typ(types)}
		}
		p.Types[s.Name] = s
		if d.err != nil {
			break
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%d trailing bytes: %w", len(d.b), errCorrupt)
	}
	return p, nil
}

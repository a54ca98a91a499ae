// Package pdb reads Microsoft program database (PDB) files, the MSF 7.00
// container that Windows symbol servers hand out, and converts the parts a
// memory introspector needs (type layouts, public symbols, the PDB's GUID and
// age) into a Volatility 3 Intermediate Symbol Format (ISF) document.
//
// A PDB is input we did not produce (a download, a file in a cache): every
// length, index and count read from it is checked, type references are
// followed to a bounded depth, and malformed input yields an error wrapping
// ErrFormat instead of a panic, a hang or an unbounded allocation.
//
// The package depends on the standard library only and emits ISF as JSON,
// so package profile can import it to convert PDBs in its symbol store.
package pdb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrFormat is wrapped by every error about a malformed or unsupported PDB.
var ErrFormat = errors.New("malformed PDB")

// Limits on what a PDB can make the reader do.
const (
	// MaxFileBytes bounds the size of a PDB file read by Open. Windows
	// kernel PDBs are 10-40 MiB.
	MaxFileBytes = 1 << 30
	// MaxStreams bounds the number of streams in the stream directory.
	MaxStreams = 1 << 16
	// MaxTypes bounds the number of type records in the TPI stream.
	MaxTypes = 1 << 22
	// MaxTypeDepth bounds how many type records are followed to describe
	// one type (modifier of pointer to array of ...); it also breaks
	// reference cycles in a forged file.
	MaxTypeDepth = 32
	// MaxFields bounds the members of one struct, union or enum, including
	// LF_INDEX continuations.
	MaxFields = 1 << 14
	// MaxNameLen bounds emitted names; longer type names are replaced by
	// a generated one and longer symbol or member names are skipped, so
	// the ISF reader (which has the same bound) accepts the document.
	MaxNameLen = 4096
)

var msfMagic = []byte("Microsoft C/C++ MSF 7.00\r\n\x1aDS\x00\x00\x00")

// Fixed stream numbers.
const (
	streamPDB = 1
	streamTPI = 2
	streamDBI = 3
)

// nilStream is the size of a stream that does not exist.
const nilStream = 0xffffffff

func errf(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrFormat)
}

// File is a parsed MSF 7.00 container: the stream directory of a PDB.
type File struct {
	data      []byte
	blockSize uint32
	numBlocks uint32
	sizes     []uint32   // stream sizes, nilStream for absent streams
	blocks    [][]uint32 // block list of each stream
}

// Open reads and parses a PDB file of at most MaxFileBytes.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open PDB: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read PDB %s: %w", path, err)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("PDB %s larger than %d bytes: %w", path, MaxFileBytes, ErrFormat)
	}
	p, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("PDB %s: %w", path, err)
	}
	return p, nil
}

// Parse parses the MSF superblock and stream directory of a PDB held in
// memory. The File keeps data; streams are copied out on demand.
func Parse(data []byte) (*File, error) {
	if len(data) < len(msfMagic)+24 || !bytes.Equal(data[:len(msfMagic)], msfMagic) {
		return nil, errf("not an MSF 7.00 file")
	}
	le := binary.LittleEndian
	h := data[len(msfMagic):]
	f := &File{data: data, blockSize: le.Uint32(h[0:]), numBlocks: le.Uint32(h[8:])}
	dirBytes, mapBlock := le.Uint32(h[12:]), le.Uint32(h[20:])
	switch f.blockSize {
	case 512, 1024, 2048, 4096, 8192, 16384, 32768:
	default:
		return nil, errf("block size %d", f.blockSize)
	}
	if avail := uint64(len(data)) / uint64(f.blockSize); uint64(f.numBlocks) > avail {
		// Tolerate a file that declares more blocks than it has only
		// as far as the blocks actually referenced are present.
		f.numBlocks = uint32(avail)
	}
	nDirBlocks := (uint64(dirBytes) + uint64(f.blockSize) - 1) / uint64(f.blockSize)
	if dirBytes < 4 || nDirBlocks > uint64(f.blockSize/4) {
		return nil, errf("stream directory of %d bytes", dirBytes)
	}
	mapData, err := f.block(mapBlock)
	if err != nil {
		return nil, fmt.Errorf("directory block map: %w", err)
	}
	dirBlocks := make([]uint32, nDirBlocks)
	for i := range dirBlocks {
		dirBlocks[i] = le.Uint32(mapData[4*i:])
	}
	dir, err := f.read(dirBlocks, dirBytes)
	if err != nil {
		return nil, fmt.Errorf("stream directory: %w", err)
	}
	n := le.Uint32(dir)
	if n == 0 || n > MaxStreams || uint64(n)*4+4 > uint64(len(dir)) {
		return nil, errf("%d streams in a directory of %d bytes", n, len(dir))
	}
	f.sizes = make([]uint32, n)
	f.blocks = make([][]uint32, n)
	off := 4 + 4*uint64(n)
	for i := range f.sizes {
		f.sizes[i] = le.Uint32(dir[4+4*i:])
	}
	for i, size := range f.sizes {
		if size == nilStream {
			continue
		}
		nb := (uint64(size) + uint64(f.blockSize) - 1) / uint64(f.blockSize)
		if off+4*nb > uint64(len(dir)) {
			return nil, errf("stream %d: %d blocks overrun the directory", i, nb)
		}
		bl := make([]uint32, nb)
		for j := range bl {
			bl[j] = le.Uint32(dir[off+4*uint64(j):])
			if bl[j] >= f.numBlocks {
				return nil, errf("stream %d: block %d beyond the %d in the file", i, bl[j], f.numBlocks)
			}
		}
		f.blocks[i] = bl
		off += 4 * nb
	}
	return f, nil
}

func (f *File) block(i uint32) ([]byte, error) {
	if i >= f.numBlocks {
		return nil, errf("block %d beyond the %d in the file", i, f.numBlocks)
	}
	start := uint64(i) * uint64(f.blockSize)
	return f.data[start : start+uint64(f.blockSize)], nil
}

// read assembles size bytes from a block list. size never exceeds
// len(blocks)*blockSize, and every block lies in the file, so the
// allocation is bounded by the file size.
func (f *File) read(blocks []uint32, size uint32) ([]byte, error) {
	if uint64(size) > uint64(len(blocks))*uint64(f.blockSize) {
		return nil, errf("%d bytes in %d blocks", size, len(blocks))
	}
	out := make([]byte, 0, size)
	for _, b := range blocks {
		d, err := f.block(b)
		if err != nil {
			return nil, err
		}
		need := int(size) - len(out)
		if need <= 0 {
			break
		}
		out = append(out, d[:min(need, len(d))]...)
	}
	return out, nil
}

// NumStreams returns the number of streams in the directory.
func (f *File) NumStreams() int { return len(f.sizes) }

// Stream returns a copy of stream i's bytes. An absent stream is an error.
func (f *File) Stream(i int) ([]byte, error) {
	if i < 0 || i >= len(f.sizes) || f.sizes[i] == nilStream {
		return nil, errf("no stream %d", i)
	}
	return f.read(f.blocks[i], f.sizes[i])
}

// Info is the PDB information stream (stream 1): the identity a PE image's
// CodeView record refers to.
type Info struct {
	Version   uint32
	Signature uint32
	Age       uint32
	GUID      [16]byte // as stored: the first three fields little-endian
}

// GUIDString renders the GUID as symbol servers and ISF files spell it:
// 32 upper-case hex digits, the first three fields as integers.
func (i Info) GUIDString() string {
	g := i.GUID
	return fmt.Sprintf("%02X%02X%02X%02X%02X%02X%02X%02X%X",
		g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8:16])
}

// Info reads the PDB information stream.
func (f *File) Info() (Info, error) {
	s, err := f.Stream(streamPDB)
	if err != nil {
		return Info{}, fmt.Errorf("PDB info stream: %w", err)
	}
	if len(s) < 28 {
		return Info{}, errf("PDB info stream of %d bytes", len(s))
	}
	le := binary.LittleEndian
	in := Info{Version: le.Uint32(s), Signature: le.Uint32(s[4:]), Age: le.Uint32(s[8:])}
	copy(in.GUID[:], s[12:28])
	return in, nil
}

package vmlinux

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"

	"github.com/pierrec/lz4/v4"
)

// The LZ4 legacy frame, which the kernel build (lz4 -l) uses: a magic, then
// blocks of a little-endian u32 compressed size and LZ4 block data, each
// decompressing to 8 MiB except the last. There is no end mark: the kernel
// appends the uncompressed size, which the kernel's own decompressor, like
// this one, recognises as the last 4 bytes of the input.
const (
	lz4LegacyMagic = 0x184c2102
	lz4LegacyBlock = 8 << 20
	// lz4MaxRatio bounds how much one compressed byte can expand in an
	// LZ4 block (a match of up to 255 bytes per length byte).
	lz4MaxRatio = 255
)

// unlz4Legacy decompresses an LZ4 legacy frame. Blocks are independent, so
// it decodes them in parallel. pierrec/lz4's Reader reads this format too,
// but allocates full 8 MiB buffers per reader and decodes serially.
func unlz4Legacy(p []byte) ([]byte, error) {
	if len(p) < 4 || binary.LittleEndian.Uint32(p) != lz4LegacyMagic {
		return nil, fmt.Errorf("lz4: no legacy frame magic: %w", ErrFormat)
	}
	p = p[4:]
	var blocks [][]byte
	for len(p) > 0 {
		if len(p) < 4 {
			return nil, fmt.Errorf("lz4: truncated block size: %w", ErrFormat)
		}
		n := binary.LittleEndian.Uint32(p)
		p = p[4:]
		if len(p) == 0 {
			break // the appended uncompressed size
		}
		if n == lz4LegacyMagic {
			continue // concatenated frames
		}
		if n == 0 || uint64(n) > uint64(len(p)) || n > uint32(lz4.CompressBlockBound(lz4LegacyBlock)) {
			return nil, fmt.Errorf("lz4: block %d of %d bytes with %d left: %w", len(blocks), n, len(p), ErrFormat)
		}
		if len(blocks) >= MaxVmlinuxSize/lz4LegacyBlock {
			return nil, fmt.Errorf("lz4: more than %d blocks: %w", MaxVmlinuxSize/lz4LegacyBlock, ErrFormat)
		}
		blocks = append(blocks, p[:n])
		p = p[n:]
	}
	if len(blocks) == 0 {
		return nil, fmt.Errorf("lz4: no blocks: %w", ErrFormat)
	}
	// Every block but the last fills 8 MiB, so block i starts at
	// i*8 MiB; the last one's size is bounded by its compressed size.
	lastCap := min(lz4LegacyBlock, len(blocks[len(blocks)-1])*lz4MaxRatio+64)
	out := make([]byte, (len(blocks)-1)*lz4LegacyBlock+lastCap)
	errs := make([]error, len(blocks))
	var lastLen int
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, b := range blocks {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			start := i * lz4LegacyBlock
			dst := out[start:min(start+lz4LegacyBlock, len(out))]
			n, err := lz4.UncompressBlock(b, dst)
			switch {
			case err != nil:
				errs[i] = fmt.Errorf("lz4: block %d: %w", i, err)
			case i < len(blocks)-1 && n != lz4LegacyBlock:
				errs[i] = fmt.Errorf("lz4: block %d decompresses to %d bytes, not 8 MiB: %w", i, n, ErrFormat)
			case i == len(blocks)-1:
				lastLen = n
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out[:(len(blocks)-1)*lz4LegacyBlock+lastLen], nil
}

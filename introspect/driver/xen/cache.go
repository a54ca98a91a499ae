package xen

import (
	"container/list"
	"errors"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
)

// DefaultCacheFrames is how many guest frames the driver keeps mapped.
const DefaultCacheFrames = 1024

// frameCache is an LRU of mapped guest frames. Evicted and removed entries
// are handed to unmap, which must release them.
type frameCache[T any] struct {
	capacity int
	entries  map[introspect.Gfn]*list.Element
	order    *list.List // front: most recently used
	unmap    func(introspect.Gfn, T) error
}

type cacheEntry[T any] struct {
	gfn introspect.Gfn
	val T
}

func newFrameCache[T any](capacity int, unmap func(introspect.Gfn, T) error) *frameCache[T] {
	if capacity < 1 {
		capacity = 1
	}
	return &frameCache[T]{capacity: capacity, entries: map[introspect.Gfn]*list.Element{}, order: list.New(), unmap: unmap}
}

// get returns the mapping of gfn and marks it recently used.
func (c *frameCache[T]) get(gfn introspect.Gfn) (T, bool) {
	if e, ok := c.entries[gfn]; ok {
		c.order.MoveToFront(e)
		return e.Value.(*cacheEntry[T]).val, true
	}
	var zero T
	return zero, false
}

// put adds a mapping, replacing (and unmapping) an older one of the same
// frame, and evicts the least recently used one when full. The error is
// that of an unmap; the new entry is cached regardless.
func (c *frameCache[T]) put(gfn introspect.Gfn, v T) error {
	err := c.remove(gfn)
	c.entries[gfn] = c.order.PushFront(&cacheEntry[T]{gfn, v})
	for c.order.Len() > c.capacity {
		old := c.order.Back().Value.(*cacheEntry[T])
		err = errors.Join(err, c.remove(old.gfn))
	}
	return err
}

// remove unmaps and forgets gfn if it is cached.
func (c *frameCache[T]) remove(gfn introspect.Gfn) error {
	e, ok := c.entries[gfn]
	if !ok {
		return nil
	}
	c.order.Remove(e)
	delete(c.entries, gfn)
	if err := c.unmap(gfn, e.Value.(*cacheEntry[T]).val); err != nil {
		return fmt.Errorf("unmap %v: %w", gfn, err)
	}
	return nil
}

// flush unmaps everything, continuing past errors.
func (c *frameCache[T]) flush() error {
	var errs []error
	for c.order.Len() > 0 {
		errs = append(errs, c.remove(c.order.Back().Value.(*cacheEntry[T]).gfn))
	}
	return errors.Join(errs...)
}

func (c *frameCache[T]) len() int { return c.order.Len() }

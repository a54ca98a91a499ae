package paging

import (
	"sync"

	"github.com/vmi-exporter/vmi-exporter/introspect"
)

type cacheKey struct {
	root introspect.Pa
	page introspect.Va
}

// Cache holds virtual-to-physical translations of 4 KiB pages. It never
// expires entries by itself: the owner calls Flush whenever the guest may
// have changed its page tables (at every event of an event loop). Its size
// is bounded; when full it is cleared.
type Cache struct {
	mu  sync.Mutex
	m   map[cacheKey]introspect.Pa
	max int
}

// NewCache returns a cache of at most max translations (a default when max <= 0).
func NewCache(max int) *Cache {
	if max <= 0 {
		max = 4096
	}
	return &Cache{m: make(map[cacheKey]introspect.Pa), max: max}
}

// Lookup returns the cached physical page base of the page holding va.
func (c *Cache) Lookup(root introspect.Pa, va introspect.Va) (introspect.Pa, bool) {
	c.mu.Lock()
	pa, ok := c.m[cacheKey{root, va.PageBase()}]
	c.mu.Unlock()
	return pa, ok
}

// Insert records that the page holding va maps to the page holding pa.
func (c *Cache) Insert(root introspect.Pa, va introspect.Va, pa introspect.Pa) {
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[cacheKey{root, va.PageBase()}] = pa &^ (introspect.PageSize - 1)
	c.mu.Unlock()
}

// Flush forgets every translation.
func (c *Cache) Flush() {
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}

// Len returns the number of cached translations.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

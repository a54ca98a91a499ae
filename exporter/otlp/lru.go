package otlp

import "container/list"

// lru is a map bounded to max entries that evicts the least recently used.
type lru[K comparable, V any] struct {
	max   int
	ll    *list.List
	m     map[K]*list.Element
	evict func(K, V)
}

type entry[K comparable, V any] struct {
	k K
	v V
}

func newLRU[K comparable, V any](max int, evict func(K, V)) *lru[K, V] {
	return &lru[K, V]{max: max, ll: list.New(), m: make(map[K]*list.Element), evict: evict}
}

func (c *lru[K, V]) get(k K) (V, bool) {
	if e, ok := c.m[k]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*entry[K, V]).v, true
	}
	var zero V
	return zero, false
}

// put adds or replaces k, evicting the oldest entry when full.
func (c *lru[K, V]) put(k K, v V) {
	if e, ok := c.m[k]; ok {
		e.Value.(*entry[K, V]).v = v
		c.ll.MoveToFront(e)
		return
	}
	if c.ll.Len() >= c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		oe := old.Value.(*entry[K, V])
		delete(c.m, oe.k)
		if c.evict != nil {
			c.evict(oe.k, oe.v)
		}
	}
	c.m[k] = c.ll.PushFront(&entry[K, V]{k, v})
}

func (c *lru[K, V]) remove(k K) (V, bool) {
	if e, ok := c.m[k]; ok {
		c.ll.Remove(e)
		delete(c.m, k)
		return e.Value.(*entry[K, V]).v, true
	}
	var zero V
	return zero, false
}

func (c *lru[K, V]) len() int { return c.ll.Len() }

// each visits every entry, most recent first.
func (c *lru[K, V]) each(f func(K, V)) {
	for e := c.ll.Front(); e != nil; e = e.Next() {
		en := e.Value.(*entry[K, V])
		f(en.k, en.v)
	}
}

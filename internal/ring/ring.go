// Package ring provides the growable FIFO ring buffer that holds bgpool's
// queued tasks.
package ring

// Ring is a FIFO queue of T backed by a circular slice whose length is a power
// of two. It grows when full and never shrinks, so a steady state allocates
// nothing. The zero value is an empty ring ready to use.
//
// Ring is not safe for concurrent use: bgpool guards it with the pool's mutex.
type Ring[T any] struct {
	buf  []T
	head int // index of the oldest element
	n    int // number of elements
}

// Len reports the number of elements in the ring.
func (r *Ring[T]) Len() int { return r.n }

// Push appends v at the back, growing the buffer if it is full.
func (r *Ring[T]) Push(v T) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = v
	r.n++
}

// Pop removes and returns the front element. It reports false when the ring
// is empty. The vacated slot is zeroed so that the ring does not keep the
// element's references alive.
func (r *Ring[T]) Pop() (T, bool) {
	var zero T
	if r.n == 0 {
		return zero, false
	}
	v := r.buf[r.head]
	r.buf[r.head] = zero
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	return v, true
}

// Clear removes every element, zeroing the slots, and keeps the buffer.
func (r *Ring[T]) Clear() {
	var zero T
	for i := 0; i < r.n; i++ {
		r.buf[(r.head+i)&(len(r.buf)-1)] = zero
	}
	r.head, r.n = 0, 0
}

// grow doubles the buffer (minimum 16) and unrolls the elements to its start.
func (r *Ring[T]) grow() {
	size := 2 * len(r.buf)
	if size == 0 {
		size = 16
	}
	buf := make([]T, size)
	for i := 0; i < r.n; i++ {
		buf[i] = r.buf[(r.head+i)&(len(r.buf)-1)]
	}
	r.buf, r.head = buf, 0
}

// Peek returns the front element without removing it. It reports false when
// the ring is empty.
func (r *Ring[T]) Peek() (T, bool) {
	if r.n == 0 {
		var zero T
		return zero, false
	}
	return r.buf[r.head], true
}

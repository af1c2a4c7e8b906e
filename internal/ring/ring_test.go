package ring

import "testing"

func TestRingKeepsFIFOOrderAcrossGrowthAndWrap(t *testing.T) {
	var r Ring[int]
	next, want := 0, 0
	// Interleave pushes and pops so the head wraps around several times
	// and the buffer grows while wrapped.
	for round := 1; round <= 40; round++ {
		for i := 0; i < round; i++ {
			r.Push(next)
			next++
		}
		for i := 0; i < round/2; i++ {
			got, ok := r.Pop()
			if !ok || got != want {
				t.Fatalf("Pop() = %d, %v; want %d, true", got, ok, want)
			}
			want++
		}
	}
	if got := r.Len(); got != next-want {
		t.Fatalf("Len() = %d, want %d", got, next-want)
	}
	for r.Len() > 0 {
		got, _ := r.Pop()
		if got != want {
			t.Fatalf("Pop() = %d, want %d", got, want)
		}
		want++
	}
	if _, ok := r.Pop(); ok {
		t.Fatal("Pop() on an empty ring reported an element")
	}
}

func TestRingClearReleasesElements(t *testing.T) {
	var r Ring[*int]
	for i := 0; i < 20; i++ {
		v := i
		r.Push(&v)
	}
	r.Pop()
	r.Clear()
	if r.Len() != 0 {
		t.Fatalf("Len() after Clear = %d, want 0", r.Len())
	}
	for i, p := range r.buf {
		if p != nil {
			t.Fatalf("slot %d still holds a pointer after Clear", i)
		}
	}
	r.Push(new(int))
	if r.Len() != 1 {
		t.Fatalf("Len() = %d after a Push on a cleared ring, want 1", r.Len())
	}
}

package main

import (
	"testing"
	"time"
)

func TestDeadlines(t *testing.T) {
	d := newDeadlines(500*time.Millisecond, 50*time.Millisecond)
	t0 := time.Now()
	first := d.context(t0)
	if dl, ok := first.Deadline(); !ok || !dl.Equal(t0.Add(500*time.Millisecond)) {
		t.Fatalf("deadline %v", dl)
	}
	if d.context(t0.Add(49*time.Millisecond)) != first {
		t.Fatal("a context within the step was not shared")
	}
	t1 := t0.Add(50 * time.Millisecond)
	second := d.context(t1)
	if second == first {
		t.Fatal("not renewed after the step")
	}
	// Every request gets at least timeout-step.
	for _, at := range []time.Time{t1, t1.Add(49 * time.Millisecond)} {
		dl, _ := d.context(at).Deadline()
		if left := dl.Sub(at); left < 450*time.Millisecond || left > 500*time.Millisecond {
			t.Fatalf("at %v: %v left", at.Sub(t0), left)
		}
	}
}

func BenchmarkDeadlines(b *testing.B) {
	d := newDeadlines(500*time.Millisecond, 50*time.Millisecond)
	b.ReportAllocs()
	for b.Loop() {
		_ = d.context(time.Now())
	}
}

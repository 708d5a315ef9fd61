package streams

import (
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"
	"unsafe"
)

// TestVectorDecoderIsDecode: a run of vectors, their names the same, then
// other names, then JSON and a corrupt one, decodes through one
// VectorDecoder to what Decode gives each, errors included, and the
// vectors with the same names share one Names slice.
func TestVectorDecoderIsDecode(t *testing.T) {
	_, v, _ := hopEvents()
	var inputs [][]byte
	for i := range 4 {
		w := v
		w.Start = v.Start.Add(time.Duration(i) * time.Minute)
		w.Values = slices.Clone(v.Values)
		w.Values[0] += float64(i)
		if i == 2 {
			w.Names = append(slices.Clone(v.Names[:len(v.Names)-1]), "other")
		}
		if i == 1 || i == 3 {
			// Another window: the same keys with another count, then one
			// key more.
			w.Window = maps.Clone(v.Window)
			w.Window[QualityLive]--
			if i == 3 {
				w.Window[QualityFilled] = 1
			}
		}
		data, err := EncodeBinary(&w)
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, data)
	}
	js, err := Encode(&v)
	if err != nil {
		t.Fatal(err)
	}
	inputs = append(inputs, js, inputs[0][:len(inputs[0])-3], []byte{0x08, 0x02})
	var d VectorDecoder
	var got []FeatureVector
	for i, data := range inputs {
		g, gerr := d.Decode(data)
		w, werr := Decode[FeatureVector](data)
		if (gerr == nil) != (werr == nil) || (gerr != nil && gerr.Error() != werr.Error()) {
			t.Fatalf("input %d: error %v, Decode's %v", i, gerr, werr)
		}
		if werr == nil && !sameVector(g, w) {
			t.Fatalf("input %d: %+v\nDecode: %+v", i, g, w)
		}
		got = append(got, g)
	}
	if &got[0].Names[0] != &got[1].Names[0] {
		t.Error("two vectors with the same names do not share them")
	}
	if &got[2].Names[0] == &got[1].Names[0] || &got[3].Names[0] == &got[1].Names[0] {
		t.Error("a vector with other names shares the previous ones")
	}
}

func BenchmarkVectorDecode(b *testing.B) {
	_, v, _ := hopEvents()
	data, err := EncodeBinary(&v)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Decode[FeatureVector](data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("VectorDecoder", func(b *testing.B) {
		var d VectorDecoder
		b.ReportAllocs()
		for b.Loop() {
			if _, err := d.Decode(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestVectorDecoderAllocs: the vectors of one series after the first cost
// the decoder two allocations (the values, the trace), not an arena for
// their symbol and trace stages nor a window map, which it shares with the
// vector before.
func TestVectorDecoderAllocs(t *testing.T) {
	_, v, _ := hopEvents()
	data, err := EncodeBinary(&v)
	if err != nil {
		t.Fatal(err)
	}
	var d VectorDecoder
	first, err := d.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := d.Decode(data); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 2 {
		t.Errorf("%.0f allocations a vector, want at most 2", allocs)
	}
	next, _ := d.Decode(data)
	if reflect.ValueOf(next.Window).UnsafePointer() != reflect.ValueOf(first.Window).UnsafePointer() {
		t.Error("an equal window is a map of its own for every vector")
	}
	if unsafe.StringData(next.Symbol) != unsafe.StringData(first.Symbol) {
		t.Error("the symbol is copied for every vector")
	}
	for i := range next.Trace {
		if unsafe.StringData(next.Trace[i].Stage) != unsafe.StringData(first.Trace[i].Stage) {
			t.Errorf("hop %d's stage is copied for every vector", i)
		}
	}
}

package jsonscan

import "testing"

func TestStructuralTable(t *testing.T) {
	if len(structural) != 256 {
		t.Fatalf("len %d", len(structural))
	}
	for c := 0; c < 256; c++ {
		want := byte(' ')
		switch c {
		case '"', '[', ']', '{', '}':
			want = byte(c)
		}
		if structural[c] != want {
			t.Errorf("structural[%q] = %q", rune(c), structural[c])
		}
	}
}

package jobs

import "sort"

// ranges is a set of item indexes kept as sorted, disjoint, half-open intervals. Items are
// processed roughly in order, so a job's progress stays a handful of intervals however large
// the job is: cheap to store in one KV value and rewrite on every flush.
type ranges [][2]int64

func (r ranges) search(i int64) int {
	return sort.Search(len(r), func(k int) bool { return r[k][1] > i })
}

func (r ranges) contains(i int64) bool {
	k := r.search(i)
	return k < len(r) && r[k][0] <= i
}

// add inserts i and reports whether it was new.
func (r *ranges) add(i int64) bool {
	s := *r
	k := s.search(i)
	if k < len(s) && s[k][0] <= i {
		return false
	}
	joinLeft := k > 0 && s[k-1][1] == i
	joinRight := k < len(s) && s[k][0] == i+1
	switch {
	case joinLeft && joinRight:
		s[k-1][1] = s[k][1]
		s = append(s[:k], s[k+1:]...)
	case joinLeft:
		s[k-1][1] = i + 1
	case joinRight:
		s[k][0] = i
	default:
		s = append(s, [2]int64{})
		copy(s[k+1:], s[k:])
		s[k] = [2]int64{i, i + 1}
	}
	*r = s
	return true
}

// remove deletes i and reports whether it was present.
func (r *ranges) remove(i int64) bool {
	s := *r
	k := s.search(i)
	if k >= len(s) || s[k][0] > i {
		return false
	}
	lo, hi := s[k][0], s[k][1]
	switch {
	case lo == i && hi == i+1:
		s = append(s[:k], s[k+1:]...)
	case lo == i:
		s[k][0] = i + 1
	case hi == i+1:
		s[k][1] = i
	default:
		s = append(s, [2]int64{})
		copy(s[k+2:], s[k+1:])
		s[k] = [2]int64{lo, i}
		s[k+1] = [2]int64{i + 1, hi}
	}
	*r = s
	return true
}

func (r ranges) count() int64 {
	var n int64
	for _, iv := range r {
		n += iv[1] - iv[0]
	}
	return n
}

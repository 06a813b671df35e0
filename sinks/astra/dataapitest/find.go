package dataapitest

import (
	"encoding/base64"
	"fmt"
	"maps"
	"strconv"
	"strings"
)

type pageState struct {
	after     uint64
	remaining int // -1: no limit
}

func encodePage(p pageState) string {
	return base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("dataapitest:%d:%d", p.after, p.remaining)))
}

func decodePage(s string) (pageState, bool) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return pageState{}, false
	}
	parts := strings.Split(string(b), ":")
	if len(parts) != 3 || parts[0] != "dataapitest" {
		return pageState{}, false
	}
	a, err1 := strconv.ParseUint(parts[1], 10, 64)
	r, err2 := strconv.Atoi(parts[2])
	return pageState{after: a, remaining: r}, err1 == nil && err2 == nil
}

// startPage decodes a pageState option; page starts a fresh listing when ps is empty.
func startPage(ps string, page pageState) (pageState, *apiError) {
	if ps == "" {
		return page, nil
	}
	p, ok := decodePage(ps)
	if !ok {
		return p, errFieldValue("options.pageState", strconv.Quote(ps), "not a page state issued by this server")
	}
	return p, nil
}

// findOptions are the parsed clauses and options of a find or findOne.
type findOptions struct {
	filter   map[string]any
	proj     *projection
	sort     *sortSpec
	withSim  bool // includeSimilarity
	limit    int
	hasLimit bool
	skip     int
	page     pageState
}

// findOptions parses and checks the clauses and options of a find or findOne, in the
// order the server reports their errors.
func (q *request) findOptions() (o findOptions, err *apiError) {
	if o.filter, err = q.filter(); err != nil {
		return o, err
	}
	if o.proj, err = q.projection(); err != nil {
		return o, err
	}
	if o.sort, err = q.sort(); err != nil {
		return o, err
	}
	if o.withSim, err = q.optBool("includeSimilarity"); err != nil {
		return o, err
	}
	if _, err = q.optBool("includeSortVector"); err != nil {
		return o, err
	}
	if o.limit, o.hasLimit, err = q.optInt("limit"); err != nil {
		return o, err
	}
	if o.hasLimit && o.limit <= 0 {
		return o, errFieldValue("options.limit", fmt.Sprintf("`%d`", o.limit), "limit should be greater than `0`")
	}
	skip, hasSkip, err := q.optInt("skip")
	if err != nil {
		return o, err
	}
	if hasSkip && skip < 0 {
		return o, errFieldValue("options.skip", fmt.Sprintf("`%d`", skip), "skip should be greater than or equal to `0`")
	}
	if hasSkip && (o.sort == nil || o.sort.vector != nil) {
		return o, errFieldValue("options.skip", fmt.Sprintf("`%d`", skip), "skip options should be used with sort clause")
	}
	o.skip = skip
	ps, err := q.optString("pageState")
	if err != nil {
		return o, err
	}
	if ps == "" {
		if ps, err = q.optString("pagingState"); err != nil {
			return o, err
		}
	}
	if ps != "" && o.sort != nil {
		return o, errSort("pageState is not supported with non-empty sort clause")
	}
	o.page = pageState{remaining: -1}
	if o.hasLimit {
		o.page.remaining = o.limit
	}
	o.page, err = startPage(ps, o.page)
	return o, err
}

func (q *request) find() *result {
	o, err := q.findOptions()
	if err != nil {
		return errResult(err)
	}
	q.c.mu.RLock()
	defer q.c.mu.RUnlock()
	list := q.c.candidates(o.filter, o.page.after)
	if o.sort != nil && o.sort.vector == nil && len(list) > maxSortRows {
		return errResult(errSortOverload())
	}
	list, sims := q.c.ordered(list, o.sort)
	render := func(d *stored) map[string]any {
		out := o.proj.apply(d.doc)
		if o.withSim && sims != nil {
			out = maps.Clone(out)
			out["$similarity"] = sims[d]
		}
		return out
	}
	if q.cmd == "findOne" {
		if len(list) == 0 {
			return &result{data: map[string]any{"document": nil}}
		}
		return &result{data: map[string]any{"document": render(list[0])}}
	}
	list, next := q.window(o, list)
	docs := make([]any, len(list))
	for i, d := range list {
		docs[i] = render(d)
	}
	return &result{data: map[string]any{"documents": docs, "nextPageState": next}}
}

// window cuts one page out of the ordered matches. A sorted find returns one page after
// skip and no page state (a vector sort's page is its limit, at most maxVectorLimit); an
// unsorted one returns up to PageSize (or the limit left) and the state of the next page.
func (q *request) window(o findOptions, list []*stored) ([]*stored, any) {
	n := q.s.cfg.PageSize
	if o.page.remaining >= 0 {
		n = min(n, o.page.remaining)
	}
	if o.sort != nil {
		if o.sort.vector != nil {
			n = q.s.cfg.PageSize
			if o.hasLimit {
				n = min(o.limit, maxVectorLimit)
			}
		}
		list = list[min(o.skip, len(list)):]
		return list[:min(n, len(list))], nil
	}
	if len(list) <= n {
		return list, nil
	}
	rem := -1
	if o.page.remaining >= 0 {
		rem = o.page.remaining - n
	}
	var next any
	if rem != 0 {
		next = encodePage(pageState{after: list[n-1].seq, remaining: rem})
	}
	return list[:n], next
}

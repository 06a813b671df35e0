package astra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"sync"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
)

// resolveAll settles DOCUMENT_ALREADY_EXISTS for ps: one find with $in reads the stored
// documents of up to 100 of them at once, then each is settled on its own, at most
// ResolveConcurrency at a time. It writes each outcome into outcomes.
func (s *Sink) resolveAll(ctx context.Context, coll string, ps []*pending, outcomes []error) {
	stored := make(map[string]json.RawMessage, len(ps))
	for start := 0; start < len(ps); start += dataapi.MaxInsertMany {
		end := min(start+dataapi.MaxInsertMany, len(ps))
		ids := make([]string, 0, end-start)
		for _, p := range ps[start:end] {
			ids = append(ids, p.id)
		}
		err := s.c.Find(ctx, coll, map[string]any{"_id": map[string]any{"$in": ids}},
			dataapi.FindOptions{Projection: s.projection()}, func(doc json.RawMessage) error {
				stored[dataapi.DocID(doc)] = doc
				return nil
			})
		if err != nil {
			for _, p := range ps {
				outcomes[p.idx] = fmt.Errorf("document %d (%q): read stored document after DOCUMENT_ALREADY_EXISTS: %w", p.idx, p.id, err)
			}
			return
		}
	}
	sem := make(chan struct{}, s.cfg.ResolveConcurrency)
	var wg sync.WaitGroup
	for _, p := range ps {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := s.resolve(ctx, coll, p, stored[p.id]); err != nil {
				outcomes[p.idx] = fmt.Errorf("document %d (%q): %w", p.idx, p.id, err)
			}
		})
	}
	wg.Wait()
}

// projection returns the projection that reads a whole stored document.
func (s *Sink) projection() any {
	if s.cfg.Vector {
		return map[string]any{"*": 1} // $vector is excluded by default
	}
	return nil
}

// resolve settles one document whose insert met an existing _id, stored being what was
// read (nil when it has vanished since). It applies docstore's rules: a higher version
// replaces, the same version or version 0 replaces changed content, a lower version is
// skipped. The replace is conditional on the stored version, so a concurrent newer write
// is never overwritten; when the condition fails the document is read again.
func (s *Sink) resolve(ctx context.Context, coll string, p *pending, stored json.RawMessage) error {
	for range maxResolveRounds {
		if stored == nil {
			err := s.c.InsertOne(ctx, coll, p.body)
			var ae *dataapi.APIError
			if !errors.As(err, &ae) || ae.Code != dataapi.CodeDocumentAlreadyExists {
				return err
			}
		} else {
			replace, filter, err := s.decide(p, stored)
			if err != nil || !replace {
				return err
			}
			body, err := withPrevJobs(stored, p.body)
			if err != nil {
				return err
			}
			res, err := s.c.FindOneAndReplace(ctx, coll, filter, body, false)
			if err != nil {
				return err
			}
			if res.Matched > 0 {
				return nil
			}
		}
		// Someone else changed or deleted the document meanwhile: look again.
		doc, err := s.c.FindOne(ctx, coll, map[string]any{"_id": p.id}, &dataapi.FindOneOptions{Projection: s.projection()})
		switch {
		case errors.Is(err, dataapi.ErrNotFound):
			stored = nil
		case err != nil:
			return err
		default:
			stored = doc
		}
	}
	return fault.Retry(fault.Transient, fmt.Errorf("document %q kept changing under concurrent writers (%d rounds)", p.id, maxResolveRounds))
}

// decide says whether p replaces stored and with which condition.
func (s *Sink) decide(p *pending, stored json.RawMessage) (bool, map[string]any, error) {
	var sv struct {
		V *json.Number `json:"sluice_version"`
	}
	if err := json.Unmarshal(stored, &sv); err != nil {
		return false, nil, fault.Retry(fault.Transient, fmt.Errorf("decode stored document: %w", err))
	}
	var sver uint64
	has := sv.V != nil
	if has {
		v, err := strconv.ParseUint(sv.V.String(), 10, 64)
		if err != nil {
			f, ferr := sv.V.Float64()
			if ferr != nil || f < 0 {
				return false, nil, fault.Permanentf(fault.Rejected, "stored %s %s is not a version", VersionField, sv.V)
			}
			v = uint64(f)
		}
		sver = v
	}
	switch {
	case p.version == 0:
		same, err := sameContent(stored, p.body)
		if err != nil || same {
			return false, nil, err
		}
		return true, map[string]any{"_id": p.id}, nil
	case has && p.version < sver:
		return false, nil, nil
	case has && p.version == sver:
		same, err := sameContent(stored, p.body)
		if err != nil || same {
			return false, nil, err
		}
	}
	if !has {
		return true, map[string]any{"_id": p.id, VersionField: map[string]any{"$exists": false}}, nil
	}
	return true, map[string]any{"_id": p.id, VersionField: map[string]any{"$lte": p.version}}, nil
}

// sameContent reports whether two documents hold the same fields and values, ignoring key
// order, number formatting and VersionField; $vector values are compared as the float32
// the database stores.
func sameContent(stored, ours json.RawMessage) (bool, error) {
	var a, b map[string]any
	if err := json.Unmarshal(stored, &a); err != nil {
		return false, fault.Retry(fault.Transient, fmt.Errorf("decode stored document: %w", err))
	}
	if err := json.Unmarshal(ours, &b); err != nil {
		return false, fault.Permanent(fault.Validation, fmt.Errorf("decode document: %w", err))
	}
	delete(a, VersionField)
	delete(b, VersionField)
	delete(a, PrevJobsField)
	delete(b, PrevJobsField)
	if len(a) != len(b) {
		return false, nil
	}
	for k, av := range a {
		bv, ok := b[k]
		if !ok {
			return false, nil
		}
		if k == "$vector" {
			if !sameVector(av, bv) {
				return false, nil
			}
			continue
		}
		if !reflect.DeepEqual(av, bv) {
			return false, nil
		}
	}
	return true, nil
}

func sameVector(a, b any) bool {
	av, aok := a.([]any)
	bv, bok := b.([]any)
	if !aok || !bok || len(av) != len(bv) {
		return reflect.DeepEqual(a, b)
	}
	for i := range av {
		x, xok := av[i].(float64)
		y, yok := bv[i].(float64)
		if !xok || !yok || float32(x) != float32(y) {
			return false
		}
	}
	return true
}

package sign_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/sign"
)

func key(t *testing.T, s string) *sign.Key {
	t.Helper()
	k, err := sign.NewKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestVerify(t *testing.T) {
	k := key(t, "0123456789abcdef0123456789abcdef")
	other := key(t, "0123456789abcdef0123456789abcdeF")
	payload := []byte(`{"type":"decide_feature_request","actor":"alice"}`)
	good := k.Sign(sign.Command, payload)
	for _, tc := range []struct {
		name    string
		p       sign.Purpose
		payload []byte
		sig     string
		want    error // nil: valid
		msg     string
	}{
		{"genuine", sign.Command, payload, good, nil, ""},
		{"missing", sign.Command, payload, "", sign.ErrMissing, "Sluice-Signature"},
		{"other purpose", sign.Rollback, payload, good, sign.ErrInvalid, "forged or altered"},
		{"altered payload", sign.Command, []byte(`{"type":"decide_feature_request","actor":"mallory"}`), good, sign.ErrInvalid, "forged or altered"},
		{"other key", sign.Command, payload, other.Sign(sign.Command, payload), sign.ErrInvalid, "signed with key \"" + other.ID() + "\""},
		{"mac of other key under our id", sign.Command, payload, "v1:" + k.ID() + ":" + strings.Split(other.Sign(sign.Command, payload), ":")[2], sign.ErrInvalid, "forged or altered"},
		{"truncated mac", sign.Command, payload, good[:len(good)-2], sign.ErrInvalid, "forged or altered"},
		{"not base64", sign.Command, payload, "v1:" + k.ID() + ":***", sign.ErrInvalid, "forged or altered"},
		{"no version", sign.Command, payload, strings.TrimPrefix(good, "v1:"), sign.ErrInvalid, "not v1:"},
		{"no key id", sign.Command, payload, "v1:abc", sign.ErrInvalid, "not v1:"},
		{"hostile key id", sign.Command, payload, "v1:" + strings.Repeat("x", 1000) + ":AAAA", sign.ErrInvalid, "signed with key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := k.Verify(tc.p, tc.payload, tc.sig)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) || !fault.IsPermanent(err) || fault.ClassOf(err) != fault.Auth || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Verify: %v (class %q), want %v saying %q", err, fault.ClassOf(err), tc.want, tc.msg)
			}
			if len(err.Error()) > 400 {
				t.Fatalf("error of %d bytes echoes hostile input", len(err.Error()))
			}
		})
	}
}

func TestNewKey(t *testing.T) {
	for _, tc := range []struct {
		name, secret string
		ok           bool
	}{
		{"32 bytes", strings.Repeat("k", 32), true},
		{"31 bytes", strings.Repeat("k", 31), false},
		{"padded with spaces", "  " + strings.Repeat("k", 31) + "\n", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := sign.NewKey(tc.secret)
			if (err == nil) != tc.ok {
				t.Fatalf("NewKey: %v", err)
			}
			if err == nil && (strings.Contains(k.String(), tc.secret) || len(k.ID()) != 8) {
				t.Fatalf("key prints as %q", k)
			}
		})
	}
	// The same secret gives the same id in every process; trimming white space does not
	// change the key.
	if key(t, strings.Repeat("k", 32)+"\n").ID() != key(t, strings.Repeat("k", 32)).ID() {
		t.Fatal("ids differ")
	}
}

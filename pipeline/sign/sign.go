// Package sign authenticates the messages the workers act on with authority — requirement and
// feature-request commands, whose actor enters the hash-chained audit, and job rollbacks,
// which delete documents — so that only the API, which set that actor from the caller's
// bearer token, can issue them. Anyone else with access to the broker (a loader's
// credentials, a misconfigured permission) can publish on the same subjects; without the key
// they cannot sign, and the workers dead-letter what they publish (issue 11, finding 4).
//
// A signature is an HMAC-SHA256 under a key the API and the workers share, over a purpose and
// the whole payload (which holds the command id, the actor or requester, and the body). It
// travels in the schemas.HeaderSignature header as "v1:<key id>:<mac>", where the key id is
// a fingerprint of the key (never the key) so a worker holding another key says so.
// Headers survive dead-lettering and replay, so a genuine command that was dead-lettered for
// another reason replays with its signature.
package sign

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/schemas"
)

// KeyFile is the file, inside the data directory, that holds the key when none is given
// (SLUICE_COMMAND_KEY or SLUICE_COMMAND_KEY_FILE): generated on first use, mode 0600.
const KeyFile = "command.key"

// MinKeyLen is the shortest key accepted, in bytes: 32 bytes of a random string (e.g.
// `openssl rand -base64 32`, 44 characters) carry enough entropy for HMAC-SHA256.
const MinKeyLen = 32

// Purpose separates what is signed, so that a signature made for one kind of message is never
// accepted for another.
type Purpose string

// The purposes Sluice signs.
const (
	// Command is a requirement or feature-request command (schema sluice.command.v1).
	Command Purpose = "sluice.command.v1"
	// Rollback is a job rollback event (schemas.JobRollback).
	Rollback Purpose = "sluice.job.rollback.v1"
)

// ErrMissing is returned by Verify when a message carries no signature.
var ErrMissing = errors.New("no signature: it was not published by the Sluice API")

// ErrInvalid is returned by Verify when a signature does not match the message: it was
// forged, the message was altered, or it was signed with another key.
var ErrInvalid = errors.New("signature does not match")

// Key signs and verifies. It is immutable and safe for concurrent use.
type Key struct {
	secret []byte
	id     string
}

// NewKey returns the Key of secret, which must be at least MinKeyLen bytes. The secret's
// bytes are the key as they are (no decoding), surrounding white space trimmed.
func NewKey(secret string) (*Key, error) {
	secret = strings.TrimSpace(secret)
	if len(secret) < MinKeyLen {
		return nil, fmt.Errorf("command signing key: %d bytes, want at least %d (e.g. openssl rand -base64 32)", len(secret), MinKeyLen)
	}
	sum := sha256.Sum256([]byte("sluice key id\x00" + secret))
	return &Key{secret: []byte(secret), id: hex.EncodeToString(sum[:4])}, nil
}

// ID is the key's fingerprint (8 hex digits): safe to log, equal across processes that share
// the key.
func (k *Key) ID() string { return k.id }

// String returns the fingerprint, never the secret.
func (k *Key) String() string { return "key " + k.id }

func (k *Key) mac(p Purpose, payload []byte) []byte {
	h := hmac.New(sha256.New, k.secret)
	h.Write([]byte(p))
	h.Write([]byte{0})
	h.Write(payload)
	return h.Sum(nil)
}

// Sign returns the signature of payload for purpose p, the value of schemas.HeaderSignature.
func (k *Key) Sign(p Purpose, payload []byte) string {
	return "v1:" + k.id + ":" + base64.RawURLEncoding.EncodeToString(k.mac(p, payload))
}

// SignMsg sets m's signature header for purpose p over m.Data. Call it after the payload is
// final.
func (k *Key) SignMsg(p Purpose, m *nats.Msg) {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	m.Header.Set(schemas.HeaderSignature, k.Sign(p, m.Data))
}

// Verify checks sig (a schemas.HeaderSignature value, "" when absent) against payload for
// purpose p. It returns nil, or an error wrapping ErrMissing or ErrInvalid, classified
// permanent with class fault.Auth: retrying cannot make a forged message genuine.
func (k *Key) Verify(p Purpose, payload []byte, sig string) error {
	if sig == "" {
		return fault.Permanent(fault.Auth, fmt.Errorf("%w (header %s is missing)", ErrMissing, schemas.HeaderSignature))
	}
	rest, ok := strings.CutPrefix(sig, "v1:")
	id, mac64, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 {
		return fault.Permanent(fault.Auth, fmt.Errorf("%w: header %s is not v1:<key id>:<mac>", ErrInvalid, schemas.HeaderSignature))
	}
	got, err := base64.RawURLEncoding.DecodeString(mac64)
	if err != nil || !hmac.Equal(got, k.mac(p, payload)) {
		if id != k.id {
			return fault.Permanent(fault.Auth, fmt.Errorf("%w: signed with key %.8q, this worker holds key %s "+
				"(forged, or the API and the workers do not share SLUICE_COMMAND_KEY)", ErrInvalid, id, k.id))
		}
		return fault.Permanent(fault.Auth, fmt.Errorf("%w: forged or altered %s", ErrInvalid, p))
	}
	return nil
}

// VerifyMsg is Verify over a message's payload and signature header.
func (k *Key) VerifyMsg(p Purpose, headers nats.Header, payload []byte) error {
	return k.Verify(p, payload, headers.Get(schemas.HeaderSignature))
}

package mailertest

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// failAsSMTP makes any failure of s a 535 5.7.8 reply; go-smtp would
// otherwise answer 454 for an error that is not an *smtp.SMTPError.
func failAsSMTP(s sasl.Server) sasl.Server {
	return saslFunc(func(r []byte) ([]byte, bool, error) {
		c, done, err := s.Next(r)
		var se *smtp.SMTPError
		if err != nil && !errors.As(err, &se) {
			err = smtp.ErrAuthFailed
		}
		return c, done, err
	})
}

type saslFunc func(response []byte) (challenge []byte, done bool, err error)

func (f saslFunc) Next(response []byte) ([]byte, bool, error) { return f(response) }

// newLoginServer serves the LOGIN mechanism, which go-sasl has only as a
// client: "Username:" and "Password:" challenges, an optional initial
// response carrying the user name.
func newLoginServer(users map[string]string, login func(string)) sasl.Server {
	step, user := 0, ""
	return saslFunc(func(r []byte) ([]byte, bool, error) {
		switch {
		case step == 0 && r == nil:
			step = 1
			return []byte("Username:"), false, nil
		case step <= 1:
			step, user = 2, string(r)
			return []byte("Password:"), false, nil
		}
		if p, ok := users[user]; ok && p == string(r) {
			login(user)
			return nil, true, nil
		}
		return nil, false, smtp.ErrAuthFailed
	})
}

// newCRAMMD5Server serves CRAM-MD5 (RFC 2195), which go-sasl lacks.
func newCRAMMD5Server(users map[string]string, login func(string)) sasl.Server {
	var challenge []byte
	return saslFunc(func(r []byte) ([]byte, bool, error) {
		if challenge == nil {
			b := make([]byte, 8)
			rand.Read(b)
			challenge = fmt.Appendf(nil, "<%x.%d@mailertest>", b, time.Now().Unix())
			return challenge, false, nil
		}
		user, digest, ok := strings.Cut(string(r), " ")
		p, known := users[user]
		if ok && known {
			mac := hmac.New(md5.New, []byte(p))
			mac.Write(challenge)
			if hmac.Equal([]byte(hex.EncodeToString(mac.Sum(nil))), []byte(digest)) {
				login(user)
				return nil, true, nil
			}
		}
		return nil, false, smtp.ErrAuthFailed
	})
}

// newXOAUTH2Server serves Google's XOAUTH2, which go-sasl lacks: the
// response is "user=U\x01auth=Bearer T\x01\x01"; a bad token gets a JSON
// error challenge, and the client's reply to it gets 535.
func newXOAUTH2Server(tokens map[string]string, login func(string)) sasl.Server {
	failed := false
	return saslFunc(func(r []byte) ([]byte, bool, error) {
		if failed {
			return nil, false, smtp.ErrAuthFailed
		}
		if r == nil {
			return []byte{}, false, nil
		}
		var user, token string
		for _, f := range bytes.Split(r, []byte{1}) {
			k, v, _ := strings.Cut(string(f), "=")
			switch k {
			case "user":
				user = v
			case "auth":
				token = strings.TrimPrefix(v, "Bearer ")
			}
		}
		if u, ok := tokens[token]; ok && u == user {
			login(user)
			return nil, true, nil
		}
		failed = true
		return []byte(`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`), false, nil
	})
}

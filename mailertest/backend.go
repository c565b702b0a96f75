package mailertest

import (
	"io"
	"slices"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

type backend struct{ srv *Server }

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	wc, _ := c.Conn().(*conn)
	return &session{srv: b.srv, c: c, wc: wc}, nil
}

// session is go-smtp's view of one client: it records the transaction and
// answers as the options say.
type session struct {
	srv  *Server
	c    *smtp.Conn
	wc   *conn
	user string

	from       string
	to         []string
	utf8       bool
	size       int64
	requireTLS bool
}

var errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}

func (s *session) AuthMechanisms() []string {
	cfg := &s.srv.cfg
	if len(cfg.users) == 0 && len(cfg.tokens) == 0 {
		return nil
	}
	if (cfg.starttls || cfg.implicitTLS) && !s.wc.tls() && !cfg.insecureAuth {
		return nil
	}
	if cfg.mechanisms != nil {
		return cfg.mechanisms
	}
	var mechs []string
	if len(cfg.users) > 0 {
		mechs = append(mechs, "PLAIN", "LOGIN", "CRAM-MD5")
	}
	if len(cfg.tokens) > 0 {
		mechs = append(mechs, "XOAUTH2", "OAUTHBEARER")
	}
	return mechs
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	if !slices.Contains(s.AuthMechanisms(), mech) {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	cfg := &s.srv.cfg
	login := func(user string) { s.user = user }
	switch mech {
	case "PLAIN":
		return failAsSMTP(sasl.NewPlainServer(func(identity, user, pass string) error {
			if p, ok := cfg.users[user]; ok && p == pass && (identity == "" || identity == user) {
				login(user)
				return nil
			}
			return smtp.ErrAuthFailed
		})), nil
	case "LOGIN":
		return newLoginServer(cfg.users, login), nil
	case "CRAM-MD5":
		return newCRAMMD5Server(cfg.users, login), nil
	case "XOAUTH2":
		return newXOAUTH2Server(cfg.tokens, login), nil
	case "OAUTHBEARER":
		return failAsSMTP(sasl.NewOAuthBearerServer(func(o sasl.OAuthBearerOptions) *sasl.OAuthBearerError {
			if u, ok := cfg.tokens[o.Token]; ok && (o.Username == "" || o.Username == u) {
				login(u)
				return nil
			}
			return &sasl.OAuthBearerError{Status: "invalid_token", Schemes: "bearer"}
		})), nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.srv.cfg.requireAuth && s.user == "" {
		return errAuthRequired
	}
	s.from = from
	if opts != nil {
		s.utf8, s.size, s.requireTLS = opts.UTF8, opts.Size, opts.RequireTLS
	}
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if r, ok := s.srv.cfg.replies[strings.ToLower(to)]; ok {
		return &smtp.SMTPError{Code: r.code, EnhancedCode: smtp.EnhancedCode(r.enhanced), Message: r.text}
	}
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if f := s.wc.takeDataFault(); f != nil {
		return f.smtpError()
	}
	s.srv.record(Message{
		From:       s.from,
		To:         append([]string(nil), s.to...),
		Data:       b,
		Helo:       s.c.Hostname(),
		TLS:        s.wc.tls(),
		AuthUser:   s.user,
		UTF8:       s.utf8,
		Size:       s.size,
		RequireTLS: s.requireTLS,
	})
	return nil
}

func (s *session) Reset() {
	s.from, s.to, s.utf8, s.size, s.requireTLS = "", nil, false, 0, false
}

func (s *session) Logout() error { return nil }

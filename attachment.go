package mailer

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
)

// Attachment is a file attached to a Message. Its body is read only while
// the message is rendered.
type Attachment struct {
	// Filename is the name the recipient sees.
	Filename string
	// ContentType is the media type; by default it comes from the
	// filename's extension, else application/octet-stream.
	ContentType string
	// ContentID, when set, makes the attachment inline: HTML refers to it
	// as "cid:" + ContentID (multipart/related).
	ContentID string

	open func() (io.ReadCloser, error)
	once bool // open works once: the body comes from the caller's reader
}

// AttachFile attaches the file at path, read when the message is sent. A
// file that does not exist or cannot be read is an error now.
func (m *Message) AttachFile(path string) (*Attachment, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("mailer: attaching %w", err)
	}
	st, err := f.Stat()
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("mailer: attaching %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("mailer: attaching %s: is a directory", path)
	}
	return m.attach(filepath.Base(path), func() (io.ReadCloser, error) { return os.Open(path) }), nil
}

// AttachFS attaches the file name from fsys (an embed.FS, os.DirFS...),
// read when the message is sent. A missing file is an error now.
func (m *Message) AttachFS(fsys fs.FS, name string) (*Attachment, error) {
	st, err := fs.Stat(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("mailer: attaching %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("mailer: attaching %s: is a directory", name)
	}
	return m.attach(path.Base(name), func() (io.ReadCloser, error) { return fsys.Open(name) }), nil
}

// AttachReader attaches the data read from r under filename. r is read
// once, when the message is sent, so such a message can be sent only once.
func (m *Message) AttachReader(filename string, r io.Reader) *Attachment {
	var used atomic.Bool
	a := m.attach(filename, func() (io.ReadCloser, error) {
		if used.Swap(true) {
			return nil, fmt.Errorf("mailer: attachment %q: its reader was already read", filename)
		}
		return io.NopCloser(r), nil
	})
	a.once = true
	return a
}

// AttachBytes attaches data under filename.
func (m *Message) AttachBytes(filename string, data []byte) *Attachment {
	return m.attach(filename, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}

// EmbedFile attaches the file at path inline, for HTML to show as
// <img src="cid:contentID">.
func (m *Message) EmbedFile(path, contentID string) (*Attachment, error) {
	a, err := m.AttachFile(path)
	if err != nil {
		return nil, err
	}
	a.ContentID = contentID
	return a, nil
}

// Attachments returns the message's attachments, inline ones included.
func (m *Message) Attachments() []*Attachment {
	return append([]*Attachment(nil), m.attachments...)
}

func (m *Message) attach(name string, open func() (io.ReadCloser, error)) *Attachment {
	a := &Attachment{Filename: name, open: open}
	m.attachments = append(m.attachments, a)
	return a
}

// mediaType returns the attachment's content type.
func (a *Attachment) mediaType() string {
	if a.ContentType != "" {
		return a.ContentType
	}
	if t := mime.TypeByExtension(strings.ToLower(filepath.Ext(a.Filename))); t != "" {
		return t
	}
	return "application/octet-stream"
}

// check validates the attachment's fields for Message.Validate, and refuses
// the media types go-message cannot render: a multipart type, whose body it
// would write unencoded, and a charset other than UTF-8 or US-ASCII.
func (a *Attachment) check() error {
	if err := checkText("attachment filename", a.Filename, false); err != nil {
		return err
	}
	what := "attachment " + quoteCut(a.Filename) + ":"
	if err := checkText(what+" Content-Type", a.ContentType, true); err != nil {
		return err
	}
	if err := checkID(what+" Content-ID", a.ContentID); err != nil {
		return err
	}
	mt, params, err := mime.ParseMediaType(a.mediaType())
	switch {
	case err != nil: // attachmentPart sends it as application/octet-stream
		return nil
	case strings.HasPrefix(mt, "multipart/"):
		return fmt.Errorf("mailer: %s Content-Type %s: a multipart type cannot be attached", what, quoteCut(mt))
	}
	switch strings.ToLower(params["charset"]) {
	case "", "us-ascii", "utf-8":
		return nil
	}
	return fmt.Errorf("mailer: %s Content-Type %s: only the charsets utf-8 and us-ascii can be rendered", what, quoteCut(a.ContentType))
}

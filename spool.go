package mailer

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// spoolMemory is how much of a spooled message is kept in memory; the
// rest goes to a temporary file.
const spoolMemory = 1 << 20

// spool keeps a message that must be read twice (DKIM hashes it, then it
// is sent) but whose source can be read only once: in memory up to
// spoolMemory bytes, then in a temporary file that is unlinked as soon as
// it is made, so that nothing is left behind on any path, a crash
// included.
type spool struct {
	buf bytes.Buffer
	f   *os.File
}

func (s *spool) Write(p []byte) (int, error) {
	if s.f == nil && s.buf.Len()+len(p) > spoolMemory {
		f, err := os.CreateTemp("", "mailer-spool-*")
		if err != nil {
			return 0, fmt.Errorf("mailer: spooling the message: %w", err)
		}
		if err := os.Remove(f.Name()); err != nil {
			f.Close()
			return 0, fmt.Errorf("mailer: spooling the message: %w", err)
		}
		s.f = f
		if _, err := s.buf.WriteTo(f); err != nil {
			return 0, fmt.Errorf("mailer: spooling the message: %w", err)
		}
	}
	if s.f != nil {
		return s.f.Write(p)
	}
	return s.buf.Write(p)
}

// reader returns the spooled message from its start; it may be called
// again for another reading.
func (s *spool) reader() (io.ReadSeeker, error) {
	if s.f == nil {
		return bytes.NewReader(s.buf.Bytes()), nil
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("mailer: reading the spooled message: %w", err)
	}
	return s.f, nil
}

// Close releases the memory or the file.
func (s *spool) Close() error {
	s.buf = bytes.Buffer{}
	if s.f != nil {
		return s.f.Close()
	}
	return nil
}

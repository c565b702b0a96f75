package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"time"
)

// passwordEnv is read when no other password source is given on the
// command line.
const passwordEnv = "MAILER_PASSWORD"

// passwordSources are the places one layer (the command line or the
// profile) may name for the password, tried in this order.
type passwordSources struct {
	command, file, env string
	literal            *string
	envKey             string // how the layer spells env, for the error
}

// read returns the password from the first source given; found is false
// when none is.
func (ps passwordSources) read() (pw string, found bool, err error) {
	switch {
	case ps.command != "":
		pw, err = passwordFromCommand(ps.command)
	case ps.file != "":
		pw, err = passwordFromFile(ps.file)
	case ps.env != "":
		var ok bool
		if pw, ok = os.LookupEnv(ps.env); !ok {
			err = configErrorf("%s: the variable %s is not set", ps.envKey, ps.env)
		}
	case ps.literal != nil:
		pw = *ps.literal
	default:
		return "", false, nil
	}
	return pw, true, err
}

// resolvePassword fills s.password from the command line (--password-command,
// --password-file, --password-env, --password), else the MAILER_PASSWORD
// variable, else the profile (PASSWORD_COMMAND, PASSWORD_FILE, PASSWORD_ENV,
// PASSWORD). Without a user name only a password flag is an error.
func (c *connFlags) resolvePassword(s *settings, p *smtpProfile) error {
	flags := passwordSources{command: c.passwordCommand, file: c.passwordFile, env: c.passwordEnv, envKey: "--password-env"}
	if c.fs.Changed("password") {
		flags.literal = &c.password
	}
	pw, found, err := flags.read()
	if err != nil {
		return err
	}
	if found && s.username == "" {
		return usageErrorf("a password was given without --username")
	}
	if s.username == "" {
		// A password in the environment or the profile without a user
		// name is not used, as mumailer did not use it.
		return nil
	}
	if !found {
		pw, found = os.LookupEnv(passwordEnv)
	}
	if !found {
		profile := passwordSources{command: p.PasswordCommand, file: p.PasswordFile, env: p.PasswordEnv,
			literal: p.Password, envKey: "profile PASSWORD_ENV"}
		if pw, found, err = profile.read(); err != nil {
			return err
		}
	}
	if !found {
		return configErrorf("no password for %s: give --password-command, --password-file or the %s variable", s.username, passwordEnv)
	}
	s.password = pw
	return nil
}

// passwordFromCommand runs command with sh -c, like msmtp's passwordeval,
// and returns the first line it prints.
func passwordFromCommand(command string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", configErrorf("the password command failed (%v): run it by hand to see why", err)
	}
	pw := firstLine(out)
	if pw == "" {
		return "", configErrorf("the password command printed nothing")
	}
	return pw, nil
}

// passwordFromFile reads the first line of path, refusing a file that
// anyone but its owner may read or change.
func passwordFromFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", configErrorf("password file %s does not exist", path)
		}
		return "", configErrorf("password file: %v", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", configErrorf("password file %s is open to group or others (mode %04o): run chmod 600 %s", path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", configErrorf("password file: %v", err)
	}
	pw := firstLine(data)
	if pw == "" {
		return "", configErrorf("password file %s is empty", path)
	}
	return pw, nil
}

// firstLine returns b up to its first line end.
func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return strings.TrimSuffix(string(line), "\r")
}

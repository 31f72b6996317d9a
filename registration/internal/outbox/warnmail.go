package outbox

import (
	"context"
	"errors"
	netmail "net/mail"
	"strconv"
	"strings"

	"github.com/wneessen/go-mail"

	"pesto/shared/wire"
)

var _ Sender = (*Mailer)(nil)

// Send sends one outbox entry, a key email or a quota warning: nil once the
// server has accepted it, a *RejectedError when the server refused it, an
// *InvalidEmailError when it cannot be sent at all, and another error when
// no server could take it.
func (m *Mailer) Send(ctx context.Context, e wire.OutboxEntry) error {
	switch {
	case e.Key != nil:
		return m.SendKey(ctx, *e.Key)
	case e.Warning != nil:
		msg, err := m.warningMessage(*e.Warning)
		if err != nil {
			return err
		}
		return m.sendMsg(ctx, msg)
	}
	return &InvalidEmailError{errors.New("empty outbox entry")}
}

// warningMessage builds the email of a quota warning: plain text and HTML,
// the address escaped in the HTML. Its subject names the threshold.
func (m *Mailer) warningMessage(w wire.QuotaWarning) (*mail.Msg, error) {
	addr, err := netmail.ParseAddress(w.To)
	if err != nil || addr.Name != "" || addr.Address != strings.TrimSpace(w.To) {
		if err == nil {
			err = errors.New("not a bare address")
		}
		return nil, &InvalidEmailError{err}
	}
	text, html := warningBody(w)
	msg := mail.NewMsg()
	msg.FromMailAddress(m.cfg.From)
	msg.ToMailAddress(&netmail.Address{Address: addr.Address})
	msg.Subject(warningSubject(w))
	msg.SetMessageID()
	msg.SetDate()
	msg.SetBodyString(mail.TypeTextPlain, text)
	msg.AddAlternativeString(mail.TypeTextHTML, html)
	return msg, nil
}

func warningSubject(w wire.QuotaWarning) string {
	if w.Percent >= 100 {
		return "Your Pesto API calls for " + w.Month.Format("January 2006") + " are used up"
	}
	return "You have used " + strconv.Itoa(w.Percent) + "% of your Pesto API calls for " + w.Month.Format("January 2006")
}

// warningBody returns the text and HTML parts of a warning.
func warningBody(w wire.QuotaWarning) (text, html string) {
	used, limit := strconv.FormatInt(w.Used, 10), strconv.FormatInt(w.Limit, 10)
	reset := w.Month.AddDate(0, 1, 0).Format("January 2, 2006")
	var lines []string
	if w.Percent >= 100 {
		lines = []string{
			"the Pesto API keys of " + w.To + " have used all " + limit + " calls of " + w.Month.Format("January 2006") + " (UTC).",
			"Further calls are answered 429 Monthly limit exceeded until the count starts again on " + reset + " (UTC).",
		}
	} else {
		lines = []string{
			"the Pesto API keys of " + w.To + " have used " + used + " of their " + limit + " calls of " + w.Month.Format("January 2006") +
				" (UTC): " + strconv.Itoa(w.Percent) + "%.",
			"The count starts again on " + reset + " (UTC). GET /api/usage with your key in X-Pesto-Token shows what is left.",
		}
	}
	text = "Hello,\n\n" + strings.Join(lines, "\n\n") + "\n\nThe Pesto team\n"
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Pesto API calls</title></head>\n")
	b.WriteString("<body style=\"font-family: sans-serif; line-height: 1.5\">\n<p>Hello,</p>\n")
	for _, l := range lines {
		b.WriteString("<p>" + htmlTextEscaper.Replace(l) + "</p>\n")
	}
	b.WriteString("<p>The Pesto team</p>\n</body>\n</html>\n")
	return text, b.String()
}

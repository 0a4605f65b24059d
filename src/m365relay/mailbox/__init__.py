"""Reading the sending mailbox through Graph: Sent Items (in-doubt sends) and, later, the Inbox (reports)."""

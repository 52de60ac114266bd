"""An email connection's recipients: added pending, approved by their link or an operator."""

// The browser's time zone, for the chat list's date groups (Today, Yesterday, …): read by
// the server from this cookie (studio/ui/chat_sidebar.py). Runs in <head>, before the page
// asks the server for anything. Without it the server's own zone is used.
(() => {
  try {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone) {
      document.cookie = "studio_tz=" + encodeURIComponent(zone) +
        "; path=/; max-age=31536000; SameSite=Lax";
    }
  } catch (e) { /* an old browser: the server's zone it is */ }
})();

() => {
  // Phones: start with the conversation sidebar closed, and close it again after a chat is
  // picked or started, so the conversation takes the whole screen.
  const narrow = () => window.innerWidth < 760;
  const closeSidebar = () => {
    const bar = document.querySelector('#conv-sidebar');
    const toggle = bar && bar.querySelector('.toggle-button');
    if (bar && toggle && bar.classList.contains('open')) toggle.click();
  };
  if (narrow()) setTimeout(closeSidebar, 50);
  document.addEventListener('click', (event) => {
    if (!narrow()) return;
    // Not for "More chats…" (nor a heading): that grows the list, the person is still in it.
    const chat = '#conv-list label:not(:has(input[value^="group:"], input[value="more:"]))';
    if (event.target.closest(chat + ', #new-chat')) setTimeout(closeSidebar, 150);
  });

  // The buttons under a chat turn (↻, ‹ n/m ›: ui/chat_values.turn_tools) are plain HTML in
  // the chatbot. A press goes to the server through the hidden #turn-action box, as
  // "<action> <seq> <nonce>" (the nonce makes a second press of the same button a change).
  document.addEventListener('click', (event) => {
    const button = event.target.closest('#chatbot button.turn-act');
    if (!button) return;
    event.preventDefault();
    event.stopPropagation();
    const box = document.querySelector('#turn-action textarea, #turn-action input');
    // The sanitizer keeps classes only: "turn-act act-<action> seq-<n>".
    const action = [...button.classList].find((c) => c.startsWith('act-'));
    const seq = [...button.classList].find((c) => c.startsWith('seq-'));
    if (!box || !action || !seq) return;
    box.value = `${action.slice(4)} ${seq.slice(4)} ${Date.now()}`;
    box.dispatchEvent(new Event('input', {bubbles: true}));  // the box's value follows
    // Gradio's Textbox sends its "input" event from its keypress handler (gradio 6.31).
    box.dispatchEvent(new KeyboardEvent('keypress', {key: 'x', bubbles: true}));
  }, true);

  // A session that ends while the page is open (signed out elsewhere, expired, password
  // changed): the server answers 401; say so plainly instead of a generic error.
  const nativeFetch = window.fetch.bind(window);
  window.fetch = async (...args) => {
    const response = await nativeFetch(...args);
    if (response.status === 401 && !document.querySelector('#signed-out-banner')) {
      const banner = document.createElement('div');
      banner.id = 'signed-out-banner';
      banner.setAttribute('role', 'alert');
      banner.innerHTML = 'You are signed out. <a href="/signin">Sign in again</a> ' +
        '(what you typed stays in the box until you reload).';
      document.body.prepend(banner);
    }
    return response;
  };
}

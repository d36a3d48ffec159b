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

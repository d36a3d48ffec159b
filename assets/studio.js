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
    if (event.target.closest('#conv-list label, #new-chat')) setTimeout(closeSidebar, 150);
  });
}

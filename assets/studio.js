() => {
  // The parts of the Chat tab drawn a frame after its message box (ui/common.drawn_later):
  // closed accordions mounted with the page, opened here once the box is on screen, and for
  // a few frames more any that appear inside them. Gradio builds a closed accordion's
  // contents only when it opens. One this can't open (a Gradio release that draws
  // accordions another way) loses the class, and with it the CSS that hides its heading:
  // it is then an accordion the person can open, never a part of the page gone for good.
  const openLater = (tries) => {
    let opening = 0;
    for (const block of document.querySelectorAll('.studio-later')) {
      const contents = block.querySelector(':scope > [data-testid="accordion-content"]');
      const toggle = block.querySelector(':scope > button.label-wrap');
      if (contents && contents.style.display !== 'none') continue;  // open
      if (!contents || !toggle || tries <= 0) {
        block.classList.remove('studio-later');
      } else {
        toggle.click();
        opening += 1;
      }
    }
    if (opening) requestAnimationFrame(() => setTimeout(() => openLater(tries - 1)));
  };
  window.studioOpenLater = openLater;  // (tests)
  const afterBox = () => {
    if (!document.querySelector('#chat-input textarea')) requestAnimationFrame(afterBox);
    else requestAnimationFrame(() => setTimeout(() => openLater(20)));  // after its paint
  };
  afterBox();

  // The chat list (#conv-sidebar, a column of the Chat tab: ui/chat.py) and its toggle. On
  // a wide screen the list is open and the toggle folds it to a strip; on a phone
  // (studio.css) it is an overlay, closed until the toggle opens it, and it closes again
  // once a chat is picked or started, or the page beside it is tapped.
  const narrow = () => window.innerWidth <= 760;
  const sidebarToggle = () => {
    const bar = document.querySelector('#conv-sidebar');
    if (!bar || bar.querySelector(':scope > #conv-toggle')) return;
    const toggle = document.createElement('button');
    toggle.id = 'conv-toggle';
    toggle.type = 'button';
    toggle.setAttribute('aria-controls', 'conv-sidebar');
    const label = () => {
      const shown = narrow() ? bar.classList.contains('conv-open')
        : !bar.classList.contains('conv-folded');
      toggle.setAttribute('aria-expanded', String(shown));
      toggle.setAttribute('aria-label', shown ? 'Hide the chat list' : 'Show the chat list');
      toggle.title = toggle.getAttribute('aria-label');
      toggle.textContent = shown ? '‹' : '☰';
    };
    toggle.addEventListener('click', () => {
      bar.classList.toggle(narrow() ? 'conv-open' : 'conv-folded');
      label();
    });
    bar.prepend(toggle);
    label();
    window.addEventListener('resize', label);
  };
  const closeSidebar = () => {
    const bar = document.querySelector('#conv-sidebar.conv-open');
    const toggle = document.querySelector('#conv-toggle');
    if (bar && toggle) toggle.click();
  };
  // The column is drawn with the page, before this runs; else when the Chat tab is.
  if (document.querySelector('#conv-sidebar')) sidebarToggle();
  else {
    const watch = new MutationObserver(() => {
      if (!document.querySelector('#conv-sidebar')) return;
      watch.disconnect();
      sidebarToggle();
    });
    watch.observe(document.body, {childList: true, subtree: true});
  }
  const beside = (event) => narrow() && document.querySelector('#conv-sidebar.conv-open') &&
    !event.target.closest('#conv-sidebar');
  // (A press there doesn't focus the box under it either: no keyboard popping up.)
  document.addEventListener('mousedown', (event) => {
    if (beside(event)) event.preventDefault();
  }, true);
  document.addEventListener('click', (event) => {
    if (!narrow() || !document.querySelector('#conv-sidebar.conv-open')) return;
    if (beside(event)) {
      // A tap beside the open list only closes it: it never also presses what lies under
      // it (a turn's button, the model picker, Send).
      event.preventDefault();
      event.stopPropagation();
      closeSidebar();
      return;
    }
    // Not for "More chats…" (nor a heading): that grows the list, the person is still in it.
    const chat = '#conv-list label:not(:has(input[value^="group:"], input[value="more:"]))';
    if (event.target.closest(chat + ', #new-chat')) setTimeout(closeSidebar, 150);
  }, true);

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

  // A picture pasted or dropped into the message box is attached, as "+ Image" would (the box is
  // a plain Textbox: ui/chat.py): the files go to that button's own file input, which uploads
  // them. Other files are not attached, and a line under the box says so; a dropped file never
  // replaces the page (the browser's own way with a drop).
  const sayNotAttached = (names) => {
    let note = document.querySelector('#attach-note');
    if (!note) {
      note = document.createElement('div');
      note.id = 'attach-note';
      note.setAttribute('role', 'status');
      const composer = document.querySelector('#composer');
      if (!composer) return;
      composer.after(note);
    }
    note.textContent = `Only pictures can be attached (PNG, JPEG, WebP, GIF): ${names.join(', ')} ` +
      `${names.length > 1 ? 'were' : 'was'} left out.`;
    clearTimeout(note.hideTimer);
    note.hideTimer = setTimeout(() => note.remove(), 8000);
  };
  const attachPictures = (files) => {
    const all = [...(files || [])];
    const pictures = all.filter((f) => f.type.startsWith('image/'));
    const others = all.filter((f) => !f.type.startsWith('image/'));
    if (others.length) sayNotAttached(others.map((f) => `“${f.name}”`));
    const input = document.querySelector('#composer input[type=file]');
    if (pictures.length && input) {
      const moved = new DataTransfer();
      pictures.forEach((f) => moved.items.add(f));
      input.files = moved.files;
      input.dispatchEvent(new Event('change', {bubbles: true}));
    }
    return all.length > 0;
  };
  document.addEventListener('paste', (event) => {
    if (!event.target.closest || !event.target.closest('#chat-input')) return;
    if (attachPictures(event.clipboardData && event.clipboardData.files)) event.preventDefault();
  }, true);
  document.addEventListener('dragover', (event) => {
    if (event.target.closest && event.target.closest('#chat-input')) event.preventDefault();
  });
  document.addEventListener('drop', (event) => {
    if (!event.target.closest || !event.target.closest('#chat-input')) return;
    if (attachPictures(event.dataTransfer && event.dataTransfer.files)) event.preventDefault();
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

  // A streaming reply's text over /studio/live (studio/ui/live.py): the server then sends
  // the page a Gradio update about once a second instead of ~8, and this writes the text
  // into the reply's bubble as it comes. The cookie tells the server this page can; the
  // stats line under the chat carries a marker (class "studio-live live-<chat>
  // reply-<id>") while the text flows. The finished message comes from Gradio as before
  // (rendered Markdown): when the marker goes, what this drew goes.
  document.cookie = 'studio_live=1; path=/; max-age=31536000; SameSite=Lax';
  const esc = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const inline = (s) => esc(s).replace(/`([^`\n]+)`/g, '<code>$1</code>')
    .replace(/\*\*([^*\n]+)\*\*/g, '<strong>$1</strong>');
  // A light Markdown while it streams (paragraphs, code blocks, `code`, **bold**); all of
  // the model's text is escaped, so nothing in it becomes markup.
  const draft = (text) => text.split(/^```/m).map((part, i) => {
    if (i % 2) {
      const nl = part.indexOf('\n');
      return '<pre><code>' + esc(nl < 0 ? '' : part.slice(nl + 1)) + '</code></pre>';
    }
    return part.split(/\n{2,}/).filter((p) => p.trim())
      .map((p) => '<p>' + inline(p).replace(/\n/g, '<br>') + '</p>').join('');
  }).join('');
  let live = null;  // {key, close, text, content, overlay, pending}
  // Replies the server refused to stream here (ended meanwhile, or too many open): not
  // asked again on every change of the page; Gradio's updates show them.
  const refused = new Set();
  const endLive = () => {
    if (!live) return;
    live.close();
    if (live.pending) live.pending.remove();
    if (live.overlay) live.overlay.remove();
    if (live.content) live.content.removeAttribute('data-studio-live');
    live = null;
  };
  const show = (mine) => {
    if (mine.pending) {  // a quick send's turn, until Gradio's update shows it
      const wrap = mine.pending.parentElement;
      const atEnd = wrap && wrap.scrollHeight - wrap.scrollTop - wrap.clientHeight < 80;
      mine.answer.innerHTML = draft(mine.text) || '<p>…</p>';
      if (atEnd) wrap.scrollTop = wrap.scrollHeight;
      return;
    }
    const contents = document.querySelectorAll('#chatbot .message.bot .message-content');
    // A quick send's text stays in the bubble Gradio showed it in (a queued message's
    // reply may be drawn after it before this stream's last piece).
    const kept = mine.quick && mine.content && mine.content.isConnected;
    const content = kept ? mine.content : contents[contents.length - 1];
    if (!content) return;
    if (mine.content !== content || !mine.overlay || !mine.overlay.isConnected) {
      if (mine.overlay) mine.overlay.remove();
      if (mine.content) mine.content.removeAttribute('data-studio-live');
      const md = content.querySelector(':scope > .md');
      mine.overlay = document.createElement('span');
      mine.overlay.className = (md ? md.className : 'md chatbot prose') + ' studio-live-text';
      content.appendChild(mine.overlay);
      content.setAttribute('data-studio-live', '');  // studio.css hides Gradio's copy
      mine.content = content;
    }
    const scroller = content.closest('.bubble-wrap');
    const atEnd = scroller &&
      scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
    mine.overlay.innerHTML = draft(mine.text);
    if (atEnd) scroller.scrollTop = scroller.scrollHeight;
  };
  // The marker's chat and reply: "<chat>/<reply>", the key of what a stream shows.
  const markerParts = (marker) => ['live-', 'reply-'].map((prefix) => {
    const c = [...marker.classList].find((name) => name.startsWith(prefix));
    return c ? c.slice(prefix.length) : '';
  });
  // A piece of the text ({at, text}) from either stream, drawn if it follows what is shown.
  const addPiece = (mine, piece) => {
    if (live !== mine || piece.at > mine.text.length) return;  // a gap: Gradio shows it all
    mine.text = mine.text.slice(0, piece.at) + piece.text;
    show(mine);
  };
  const startLive = (marker) => {
    const [chat, reply] = markerParts(marker);
    const key = `${chat}/${reply}`;
    if ((live && live.key === key) || refused.has(key)) return;
    endLive();
    const source = new EventSource('studio/live/' + encodeURIComponent(chat) +
                                   '?reply=' + encodeURIComponent(reply));
    const mine = {key, close: () => source.close(), text: '', content: null, overlay: null};
    live = mine;
    source.onmessage = (event) => addPiece(mine, JSON.parse(event.data));
    // Done: the text is whole; what this drew stays until Gradio's finished message.
    source.addEventListener('done', () => source.close());
    source.onerror = () => {
      // Refused or gone (the reply ended meanwhile): Gradio's updates show the reply.
      if (source.readyState === EventSource.CLOSED && live === mine) {
        refused.add(key);
        endLive();
      }
    };
  };
  // The quick send (studio/ui/chat_quick.py): the send event's js step posts the message to
  // studio/send, whose answer is the reply's text as it streams, after an event "started"
  // with a ticket; the step gives Gradio's send event that ticket, and the event follows
  // the reply instead of sending again. Meanwhile this page draws the question and the
  // first words itself, under the chat, until Gradio's update shows the turn. A message
  // with pictures, a busy page, or any refusal gets no ticket and goes the usual way.
  const rowsOf = () => document.querySelectorAll(
    '#chatbot .message-row:not(.studio-pending .message-row)');
  const pendingTurn = (question) => {
    const wrap = document.querySelector('#chatbot .bubble-wrap');
    if (!wrap) return null;
    const box = document.createElement('div');
    const list = wrap.querySelector('.message-wrap');  // its spacing, when the chat has one
    box.className = `${list ? list.className : ''} studio-pending`;
    const row = (who, html) => {
      const model = [...wrap.querySelectorAll(`.message-row.${who}-row`)].pop();
      const el = model ? model.cloneNode(true) : document.createElement('div');
      if (!model) {
        el.className = `message-row bubble ${who}-row`;
        el.innerHTML = '<div class="message"><div class="message-content"></div></div>';
      }
      el.querySelectorAll('[data-testid]').forEach((n) => n.removeAttribute('data-testid'));
      el.querySelectorAll('[aria-label]').forEach((n) => n.removeAttribute('aria-label'));
      const content = el.querySelector('.message-content');
      content.removeAttribute('data-studio-live');
      const md = model && model.querySelector('.message-content > .md');
      content.innerHTML = `<span class="${md ? md.className : 'md chatbot prose'}">${html}</span>`;
      return el;
    };
    const asked = row('user', draft(question));
    const answer = row('bot', '<p>…</p>');
    box.append(asked, answer);
    wrap.appendChild(box);
    wrap.scrollTop = wrap.scrollHeight;
    return {box, answer: answer.querySelector('.message-content > span'),
            rows: rowsOf().length, last: [...rowsOf()].pop() || null};
  };
  const readEvents = async (response, onEvent) => {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = 'message';
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) name = line.slice(6).trim();
          else if (line.startsWith('data:')) data += line.slice(5).trim();
        }
        if (data) onEvent(name, JSON.parse(data));
      }
    }
  };
  window.studioQuickSend = async (values) => {
    // values: the send event's inputs (text, files, session, model, system prompt,
    // incognito, the six parameters, ticket); the same come back, with the ticket set.
    const out = [...values];
    out[out.length - 1] = '';
    const [text, files, , model, system, incognito, ...rest] = values;
    const page = window.__gradio_session_hash__;
    const none = !files || (Array.isArray(files) && !files.length);
    if (!page || !none || !(text || '').trim() || !window.ReadableStream) return out;
    const stop = new AbortController();
    let response;
    try {
      response = await fetch('studio/send', {
        method: 'POST', signal: stop.signal, headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({page, text, model, system, incognito: !!incognito,
                              params: rest.slice(0, 6)})});
    } catch (error) {
      return out;  // not sent: the usual way
    }
    if (!response.ok) return out;
    if (!(response.headers.get('content-type') || '').startsWith('text/event-stream')) {
      // No ticket (the usual way sends it), or sent with no stream for this page (too many
      // open): Gradio's updates show the reply.
      const got = await response.json().catch(() => ({}));
      out[out.length - 1] = got.ticket || '';
      return out;
    }
    return new Promise((resolve) => {
      let mine = null;
      readEvents(response, (name, data) => {
        if (name === 'started') {
          endLive();
          mine = {key: `${data.chat}/${data.reply}`, close: () => stop.abort(), text: '',
                  question: text, saved: null,
                  content: null, overlay: null, pending: null, quick: true, done: false};
          mine.known = new Promise((said) => { mine.said = said; });
          const drawn = pendingTurn(text);
          if (drawn) Object.assign(mine, {pending: drawn.box, answer: drawn.answer,
                                          rows: drawn.rows, last: drawn.last});
          live = mine;
          out[out.length - 1] = data.ticket;
        } else if (name === 'go') {
          // The server says when the Gradio event may follow (ui/live.py FirstWords):
          // at once alone, after the others' first words when many send at once.
          resolve(out);
        } else if (name === 'saved' && mine) {
          mine.saved = !!data.saved;  // whether the turn was written (studioQuickFailed)
          mine.said();
        } else if (name === 'message' && mine) {
          addPiece(mine, data);
        }
      }).catch(() => {}).finally(() => {
        // The text is whole (or the page moved on): what was drawn stays until Gradio's
        // finished message.
        if (mine) {
          mine.done = true;
          mine.said();  // a stream cut short without saying: the question's text decides
        }
        resolve(out);
        settle();
      });
    });
  };
  // A send event failed: was it this page's quick send, whose turn could not be written
  // (ui/chat_quick.py)? Its own stream says whether the turn was saved, before its end;
  // only a stream cut short leaves it to the text (`text`: the hidden box's, which a
  // message sent after it has replaced). If so, the turn drawn for it goes, and its
  // question is returned for the box (chat.py GIVE_BACK_MESSAGE_JS); null when it was
  // another send.
  window.studioQuickFailed = async (text) => {
    const mine = live && live.quick && live.pending ? live : null;
    if (!mine) return null;
    if (mine.saved === null) {
      await Promise.race([mine.known, new Promise((wait) => setTimeout(wait, 3000))]);
    }
    if (mine.saved === null ? mine.question !== text : mine.saved) return null;
    if (live === mine && mine.pending) endLive();
    return mine.question;
  };
  // Opening another chat, or a new one, before Gradio showed a quick send's turn.
  document.addEventListener('click', (event) => {
    if (live && live.pending && event.target.closest('#new-chat, #conv-list label')) endLive();
  });

  const settle = () => {
    const marker = document.querySelector('#reply-stats .studio-live');
    if (live && live.pending) {
      const rows = rowsOf();
      if (rows.length === live.rows && ([...rows].pop() || null) === live.last) return;
      // Gradio's update shows the turn: its bubble takes the text from here on (unless its
      // stats line names another reply: then this one is not the page's any more).
      live.pending.remove();
      live.pending = null;
      if (marker && markerParts(marker).join('/') !== live.key) endLive();
      else show(live);
    }
    if (marker) startLive(marker);
    // A quick send's text stays until its stream ended (Gradio's stats line may name the
    // reply a moment after its turn is shown); then as any other, until the line is done.
    else if (live && !live.pending && !(live.quick && !live.done)) endLive();
  };
  new MutationObserver(settle).observe(document.body, {childList: true, subtree: true});
}
